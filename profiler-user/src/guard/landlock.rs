//! The Landlock layer: a ruleset fd built before fork from the policy's resolved paths, TCP
//! ports and scopes; the child only calls `landlock_restrict_self` on it.

use std::os::fd::OwnedFd;

use landlock::{
    ABI, Access as _, AccessFs, AccessNet, BitFlags, NetPort, PathBeneath, PathFd, Ruleset,
    RulesetAttr as _, RulesetCreatedAttr as _, Scope,
};

use super::GuardError;
use crate::policy::{CompiledPolicy, FsAccess, ResolvedPath};

/// The newest Landlock ABI whose rights this code was written and tested against (Linux 6.15+:
/// filesystem incl. refer/truncate/ioctl_dev, TCP bind/connect, signal and abstract-socket
/// scopes). Older kernels get the subset they support (best effort); newer rights stay
/// unhandled until this constant is raised.
const TESTED_ABI: ABI = ABI::V7;

/// The Landlock ABI version the running kernel supports; 0 without Landlock.
pub fn kernel_abi() -> i32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with the VERSION flag, a null attribute and a zero size the kernel only returns
    // its ABI version; no memory is read or written.
    let version = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    i32::try_from(version).unwrap_or(0).max(0)
}

/// Landlock rights for what the policy grants beneath a path.
fn rights(access: FsAccess, is_dir: bool) -> BitFlags<AccessFs> {
    let mut rights = BitFlags::EMPTY;
    if access.read {
        rights |= AccessFs::ReadFile | AccessFs::ReadDir;
    }
    if access.write {
        rights |= AccessFs::WriteFile
            | AccessFs::Truncate
            | AccessFs::RemoveDir
            | AccessFs::RemoveFile
            | AccessFs::MakeDir
            | AccessFs::MakeReg
            | AccessFs::MakeSym
            | AccessFs::MakeFifo
            | AccessFs::MakeSock
            | AccessFs::Refer
            | AccessFs::IoctlDev;
    }
    if access.execute {
        rights |= AccessFs::Execute | AccessFs::ReadFile | AccessFs::ReadDir;
    }
    // Directory-only rights on a file would make the kernel refuse the rule.
    if is_dir {
        rights
    } else {
        rights & AccessFs::from_file(TESTED_ABI)
    }
}

/// Builds the ruleset: every filesystem right of [`TESTED_ABI`] handled (so anything not
/// granted is denied), TCP handled when the network is restricted, scopes as the policy says.
pub fn build(policy: &CompiledPolicy, paths: &[ResolvedPath]) -> Result<OwnedFd, GuardError> {
    let layer = &policy.landlock;
    let mut ruleset = Ruleset::default().handle_access(AccessFs::from_all(TESTED_ABI))?;
    if layer.restrict_tcp {
        ruleset = ruleset.handle_access(AccessNet::from_all(TESTED_ABI))?;
    }
    let mut scopes = BitFlags::<Scope>::EMPTY;
    if layer.scope_signals {
        scopes |= Scope::Signal;
    }
    if layer.scope_abstract_unix {
        scopes |= Scope::AbstractUnixSocket;
    }
    if !scopes.is_empty() {
        ruleset = ruleset.scope(scopes)?;
    }
    let mut created = ruleset.create()?;
    for resolved in paths {
        let fd = PathFd::new(&resolved.path).map_err(|source| GuardError::LandlockPath {
            path: resolved.path.clone(),
            source,
        })?;
        created = created.add_rule(PathBeneath::new(
            fd,
            rights(resolved.access, resolved.is_dir),
        ))?;
    }
    if layer.restrict_tcp {
        for &port in &layer.tcp_connect_ports {
            created = created.add_rule(NetPort::new(port, AccessNet::ConnectTcp))?;
        }
    }
    let fd: Option<OwnedFd> = created.into();
    fd.ok_or(GuardError::LandlockUnavailable)
}

#[cfg(test)]
mod tests {
    use landlock::AccessFs;

    use super::rights;
    use crate::policy::FsAccess;

    #[test]
    fn writable_trees_get_write_rights_but_never_device_creation() {
        let write = rights(
            FsAccess {
                read: true,
                write: true,
                execute: false,
            },
            true,
        );
        assert!(write.contains(
            AccessFs::WriteFile | AccessFs::Truncate | AccessFs::MakeReg | AccessFs::Refer
        ));
        assert!(!write.contains(AccessFs::MakeChar) && !write.contains(AccessFs::MakeBlock));
        assert!(!write.contains(AccessFs::Execute));
    }

    #[test]
    fn file_rules_carry_only_file_rights() {
        let file = rights(
            FsAccess {
                read: true,
                write: true,
                execute: true,
            },
            false,
        );
        assert!(file.contains(AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Execute));
        assert!(!file.contains(AccessFs::ReadDir) && !file.contains(AccessFs::MakeReg));
    }
}
