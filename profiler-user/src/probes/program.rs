//! Finding a program or a config map in the loaded object, with errors that name it.

use aya::{
    Ebpf, Pod,
    maps::Array,
    programs::{Program, ProgramError},
};

use super::ProbeError;

/// The program `name` of the object, as its type `T`.
pub(crate) fn program<'a, T>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut T, ProbeError>
where
    &'a mut T: TryFrom<&'a mut Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(ProbeError::MissingProgram(name))?
        .try_into()
        .map_err(attach_error(name))
}

/// Turns a program error into one that names what was being loaded or attached.
pub(crate) fn attach_error(what: impl Into<String>) -> impl FnOnce(ProgramError) -> ProbeError {
    let what = what.into();
    move |source| ProbeError::Attach { what, source }
}

/// Writes `value` into slot 0 of the one-slot config array `name`.
pub(crate) fn set_config<T: Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
    value: T,
) -> Result<(), ProbeError> {
    let map_error = |source| ProbeError::Map { map: name, source };
    let map = ebpf.map_mut(name).ok_or(ProbeError::MissingMap(name))?;
    let mut array: Array<_, T> = Array::try_from(map).map_err(map_error)?;
    array.set(0, value, 0).map_err(map_error)
}
