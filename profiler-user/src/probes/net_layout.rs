//! Where the network tracer finds what it reads in kernel memory: raw tracepoint argument
//! positions (from the `btf_trace_*` typedefs) and structure field offsets (`struct sock`,
//! `tcp_sock`, `cgroup`, `kernfs_node`), all from the kernel's BTF, parsed with `btf-rs`.
//! Nothing is hard-coded: the same binary reads the right fields on every kernel with BTF.

use std::path::Path;

use btf_rs::{Btf, BtfType, Struct, Type};
use profiler_common::{LAYOUT_IPV6, LAYOUT_SOCK_CGROUP, NetLayout};

use super::ProbeError;

/// The kernel's own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

pub(super) fn err(reason: impl Into<String>) -> ProbeError {
    ProbeError::KernelLayout(reason.into())
}

/// Reads [`VMLINUX_BTF`] and finds every offset the network tracer needs.
pub fn kernel_net_layout() -> Result<NetLayout, ProbeError> {
    net_layout_from(Path::new(VMLINUX_BTF))
}

/// [`kernel_net_layout`] for the BTF file at `path`.
pub fn net_layout_from(path: &Path) -> Result<NetLayout, ProbeError> {
    let btf = Btf::from_file(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
    Layout { btf: &btf }.net()
}

pub(super) struct Layout<'a> {
    pub(super) btf: &'a Btf,
}

/// A field found in a structure: its byte offset and its type (typedefs and qualifiers
/// stripped).
struct Field {
    offset: u32,
    ty: Type,
}

impl Layout<'_> {
    fn net(&self) -> Result<NetLayout, ProbeError> {
        let set_state = self.trace_args("inet_sock_set_state")?;
        let sk_pos = |args: &[String], tp: &str| {
            args.iter()
                .position(|a| a == "struct sock *")
                .map(|p| p as u32)
                .ok_or_else(|| {
                    err(format!(
                        "raw tracepoint {tp} has no `struct sock *` argument"
                    ))
                })
        };
        let state_sk_arg = sk_pos(&set_state, "inet_sock_set_state")?;
        let ints: Vec<u32> = set_state
            .iter()
            .enumerate()
            .filter(|(_, a)| *a == "int")
            .map(|(i, _)| i as u32)
            .collect();
        let [state_old_arg, state_new_arg] = ints[..] else {
            return Err(err(format!(
                "inet_sock_set_state has arguments ({}), expected a socket and two states",
                set_state.join(", ")
            )));
        };
        let sock = self.find_struct("sock")?;
        let tcp_sock = self.find_struct("tcp_sock")?;
        let inet_sock = self.find_struct("inet_sock")?;
        let protocol = self.field(&sock, "sock", &["sk_protocol"])?;
        let protocol_size = self.int_size(&protocol.ty, "sock.sk_protocol")?;
        let mut layout = NetLayout {
            state_sk_arg,
            state_old_arg,
            state_new_arg,
            retransmit_sk_arg: sk_pos(
                &self.trace_args("tcp_retransmit_skb")?,
                "tcp_retransmit_skb",
            )?,
            receive_reset_sk_arg: sk_pos(
                &self.trace_args("tcp_receive_reset")?,
                "tcp_receive_reset",
            )?,
            send_reset_sk_arg: sk_pos(&self.trace_args("tcp_send_reset")?, "tcp_send_reset")?,
            family: self.offset(&sock, "sock", &["__sk_common", "skc_family"])?,
            protocol: protocol.offset,
            protocol_size,
            sport: self.offset(&inet_sock, "inet_sock", &["inet_sport"])?,
            dport: self.offset(&sock, "sock", &["__sk_common", "skc_dport"])?,
            rcv_saddr: self.offset(&sock, "sock", &["__sk_common", "skc_rcv_saddr"])?,
            daddr: self.offset(&sock, "sock", &["__sk_common", "skc_daddr"])?,
            sk_err: self.offset(&sock, "sock", &["sk_err"])?,
            sk_flags: self.offset(&sock, "sock", &["__sk_common", "skc_flags"])?,
            sock_done_bit: self.enum_value("sock_flags", "SOCK_DONE")?,
            bytes_received: self.offset(&tcp_sock, "tcp_sock", &["bytes_received"])?,
            bytes_sent: self.offset(&tcp_sock, "tcp_sock", &["bytes_sent"])?,
            bytes_retrans: self.offset(&tcp_sock, "tcp_sock", &["bytes_retrans"])?,
            state: self.offset(&sock, "sock", &["__sk_common", "skc_state"])?,
            ..NetLayout::UNSET
        };
        // The kernel side reads each tracepoint's first arguments only (as many as the oldest
        // supported kernel has): the positions found must be among them.
        let positions = [
            ("inet_sock_set_state", layout.state_sk_arg, 3),
            ("inet_sock_set_state", layout.state_old_arg, 3),
            ("inet_sock_set_state", layout.state_new_arg, 3),
            ("tcp_retransmit_skb", layout.retransmit_sk_arg, 2),
            ("tcp_receive_reset", layout.receive_reset_sk_arg, 1),
            ("tcp_send_reset", layout.send_reset_sk_arg, 2),
        ];
        if let Some((tp, position, read)) = positions.iter().find(|(_, p, read)| p >= read) {
            return Err(err(format!(
                "raw tracepoint {tp}: the socket or state is argument {position}, the tracer \
                 reads the first {read}"
            )));
        }
        if let (Ok(saddr), Ok(daddr)) = (
            self.offset(&sock, "sock", &["__sk_common", "skc_v6_rcv_saddr"]),
            self.offset(&sock, "sock", &["__sk_common", "skc_v6_daddr"]),
        ) {
            layout.v6_rcv_saddr = saddr;
            layout.v6_daddr = daddr;
            layout.features |= LAYOUT_IPV6;
        }
        // The socket's cgroup (for accepted connections, whose owner is not running when they
        // open): optional, connections are attributed to cgroup 0 without it.
        let cgroup_chain = || -> Result<(u32, u32, u32, u32, u32), ProbeError> {
            let cgroup = self.find_struct("cgroup")?;
            let kernfs_node = self.find_struct("kernfs_node")?;
            Ok((
                self.offset(&sock, "sock", &["sk_cgrp_data", "cgroup"])?,
                self.offset(&cgroup, "cgroup", &["kn"])?,
                self.offset(&cgroup, "cgroup", &["level"])?,
                self.offset(&cgroup, "cgroup", &["ancestors"])?,
                self.offset(&kernfs_node, "kernfs_node", &["id"])?,
            ))
        };
        if let Ok((sk_cgroup, kn, level, ancestors, id)) = cgroup_chain() {
            layout.sk_cgroup = sk_cgroup;
            layout.cgroup_kn = kn;
            layout.cgroup_level = level;
            layout.cgroup_ancestors = ancestors;
            layout.kn_id = id;
            layout.features |= LAYOUT_SOCK_CGROUP;
        }
        Ok(layout)
    }

    /// The arguments of raw tracepoint `name` (after the leading `void *`), as C type names.
    fn trace_args(&self, name: &str) -> Result<Vec<String>, ProbeError> {
        let typedef = format!("btf_trace_{name}");
        let types = self
            .btf
            .resolve_types_by_name(&typedef)
            .map_err(|e| err(format!("no raw tracepoint {name} in the kernel's BTF: {e}")))?;
        let Some(Type::Typedef(def)) = types.into_iter().find(|t| matches!(t, Type::Typedef(_)))
        else {
            return Err(err(format!("no raw tracepoint {name} in the kernel's BTF")));
        };
        let proto = match self.strip(self.chained(&def)?)? {
            Type::Ptr(ptr) => self.strip(self.chained(&ptr)?)?,
            other => other,
        };
        let Type::FuncProto(proto) = proto else {
            return Err(err(format!("{typedef} is not a function pointer")));
        };
        proto
            .parameters
            .iter()
            .skip(1)
            .map(|p| self.c_name(&self.strip(self.chained(p)?)?))
            .collect()
    }

    fn chained(&self, t: &dyn BtfType) -> Result<Type, ProbeError> {
        self.btf
            .resolve_chained_type(t)
            .map_err(|e| err(format!("kernel BTF: {e}")))
    }

    /// Follows typedefs, `const`, `volatile`, `restrict` and type tags.
    fn strip(&self, mut ty: Type) -> Result<Type, ProbeError> {
        for _ in 0..32 {
            ty = match &ty {
                Type::Typedef(t) => self.chained(t)?,
                Type::Const(t) | Type::Volatile(t) | Type::Restrict(t) => self.chained(t)?,
                Type::TypeTag(t) => self.chained(t)?,
                _ => return Ok(ty),
            };
        }
        Err(err("kernel BTF: a type chain does not end"))
    }

    /// `int`, `struct sock *`, `enum sk_rst_reason`…: enough to recognize an argument.
    fn c_name(&self, ty: &Type) -> Result<String, ProbeError> {
        let name = |t: &dyn BtfType| self.btf.resolve_name(t).unwrap_or_default();
        Ok(match ty {
            Type::Int(i) => name(i),
            Type::Struct(s) => format!("struct {}", name(s)),
            Type::Union(u) => format!("union {}", name(u)),
            Type::Enum(e) => format!("enum {}", name(e)),
            Type::Enum64(e) => format!("enum {}", name(e)),
            Type::Fwd(f) => format!("struct {}", name(f)),
            Type::Ptr(p) => match self.chained(p) {
                Ok(inner) => format!("{} *", self.c_name(&self.strip(inner)?)?),
                Err(_) => "void *".to_owned(),
            },
            Type::Void => "void".to_owned(),
            other => other.name().to_owned(),
        })
    }

    /// The complete definition of `struct name` (not a forward declaration).
    pub(super) fn find_struct(&self, name: &str) -> Result<Struct, ProbeError> {
        self.btf
            .resolve_types_by_name(name)
            .map_err(|e| err(format!("no struct {name} in the kernel's BTF: {e}")))?
            .into_iter()
            .find_map(|t| match t {
                Type::Struct(s) if !s.members.is_empty() => Some(s),
                _ => None,
            })
            .ok_or_else(|| err(format!("no struct {name} in the kernel's BTF")))
    }

    pub(super) fn offset(
        &self,
        within: &Struct,
        what: &str,
        path: &[&str],
    ) -> Result<u32, ProbeError> {
        self.field(within, what, path).map(|f| f.offset)
    }

    /// The field at `path` (nested named members) in `within`, looking through anonymous
    /// structs and unions on the way.
    fn field(&self, within: &Struct, what: &str, path: &[&str]) -> Result<Field, ProbeError> {
        let missing = || {
            err(format!(
                "no field {what}.{} in the kernel's BTF",
                path.join(".")
            ))
        };
        let (first, rest) = path.split_first().ok_or_else(missing)?;
        let found = self.member(within, first, 0)?.ok_or_else(missing)?;
        if rest.is_empty() {
            return Ok(found);
        }
        let (Type::Struct(inner) | Type::Union(inner)) = &found.ty else {
            return Err(missing());
        };
        let nested = self.field(inner, what, rest)?;
        Ok(Field {
            offset: found.offset + nested.offset,
            ty: nested.ty,
        })
    }

    fn member(&self, s: &Struct, name: &str, depth: u32) -> Result<Option<Field>, ProbeError> {
        if depth > 8 {
            return Ok(None);
        }
        for member in &s.members {
            let member_name = self.btf.resolve_name(member).unwrap_or_default();
            let bits = member.bit_offset();
            if member_name == name {
                if bits % 8 != 0 || member.bitfield_size().is_some_and(|b| b != 0 && b % 8 != 0) {
                    return Err(err(format!("field {name} is a bit field")));
                }
                let ty = self.strip(self.chained(member)?)?;
                return Ok(Some(Field {
                    offset: bits / 8,
                    ty,
                }));
            }
            if member_name.is_empty()
                && let Type::Struct(inner) | Type::Union(inner) =
                    self.strip(self.chained(member)?)?
                && let Some(found) = self.member(&inner, name, depth + 1)?
            {
                return Ok(Some(Field {
                    offset: bits / 8 + found.offset,
                    ty: found.ty,
                }));
            }
        }
        Ok(None)
    }

    fn int_size(&self, ty: &Type, what: &str) -> Result<u32, ProbeError> {
        match ty {
            Type::Int(i) if matches!(i.size(), 1 | 2) => Ok(i.size() as u32),
            _ => Err(err(format!("{what} is not an 8- or 16-bit integer"))),
        }
    }

    fn enum_value(&self, enum_name: &str, member: &str) -> Result<u32, ProbeError> {
        let types = self
            .btf
            .resolve_types_by_name(enum_name)
            .map_err(|e| err(format!("no enum {enum_name} in the kernel's BTF: {e}")))?;
        types
            .iter()
            .find_map(|t| match t {
                Type::Enum(e) => e
                    .members
                    .iter()
                    .find(|m| self.btf.resolve_name(*m).is_ok_and(|n| n == member))
                    .map(|m| m.val()),
                _ => None,
            })
            .ok_or_else(|| {
                err(format!(
                    "no {member} in enum {enum_name} of the kernel's BTF"
                ))
            })
    }
}

/// Offset of `exit_code` in `struct task_struct`, from [`VMLINUX_BTF`]: the process lifecycle
/// counters read the wait status of an exiting process there.
pub fn task_exit_code_offset() -> Result<u32, ProbeError> {
    let path = Path::new(VMLINUX_BTF);
    let btf = Btf::from_file(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
    let layout = Layout { btf: &btf };
    let task = layout.find_struct("task_struct")?;
    layout.offset(&task, "task_struct", &["exit_code"])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against this machine's kernel, when it has BTF: every offset is found and the ones
    /// whose place is fixed by the ABI are where the ABI puts them.
    #[test]
    fn finds_the_socket_fields_in_this_kernels_btf() {
        if !Path::new(VMLINUX_BTF).exists() {
            eprintln!("skipping test - no {VMLINUX_BTF}");
            return;
        }
        let layout = kernel_net_layout().unwrap();
        // `struct sock` starts with `struct sock_common`, which starts with the address pair.
        assert_eq!(layout.daddr, 0);
        assert_eq!(layout.rcv_saddr, 4);
        assert_eq!(layout.state_sk_arg, 0);
        assert_eq!((layout.state_old_arg, layout.state_new_arg), (1, 2));
        assert_eq!(layout.receive_reset_sk_arg, 0);
        assert!(layout.bytes_received > layout.family);
        assert_eq!(layout.sock_done_bit, 1);
        assert_ne!(layout.features & LAYOUT_SOCK_CGROUP, 0);
    }
}
