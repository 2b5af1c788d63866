//! Tracepoint record layouts, read from tracefs format files: they change between kernels
//! (6.x turned `sched_process_fork`'s comm fields into `__data_loc`), so no offset is hard-coded.

use std::fs;

use super::{ProbeError, system::ensure_tracefs};

/// Byte offset of `field` in the record of tracepoint `category/event`.
pub fn field_offset(category: &str, event: &str, field: &str) -> Result<u32, ProbeError> {
    let err = |reason: String| ProbeError::Tracepoint {
        category: category.to_owned(),
        event: event.to_owned(),
        reason,
    };
    let root = ensure_tracefs()?;
    let path = root
        .join("events")
        .join(category)
        .join(event)
        .join("format");
    let format = fs::read_to_string(&path).map_err(|e| err(format!("{}: {e}", path.display())))?;
    parse_field_offset(&format, field)
        .ok_or_else(|| err(format!("no field `{field}` in {}", path.display())))
}

/// The offset of `field` in a tracefs format file's text.
pub fn parse_field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let line = line.trim();
        let decl = line.strip_prefix("field:")?.split(';').next()?;
        let name = decl
            .rsplit(|c: char| c.is_whitespace() || c == '*')
            .next()?;
        let name = name.split('[').next()?;
        if name != field {
            return None;
        }
        line.split(';')
            .find_map(|part| part.trim().strip_prefix("offset:"))
            .and_then(|v| v.parse().ok())
    })
}

#[cfg(test)]
mod tests {
    use super::parse_field_offset;

    const FORK: &str = "name: sched_process_fork
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;
\tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;
\tfield:__data_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;
\tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;
\tfield:unsigned long args[6];\toffset:24;\tsize:48;\tsigned:0;
";

    #[test]
    fn finds_offsets_of_plain_data_loc_and_array_fields() {
        assert_eq!(parse_field_offset(FORK, "child_pid"), Some(20));
        assert_eq!(parse_field_offset(FORK, "parent_comm"), Some(8));
        assert_eq!(parse_field_offset(FORK, "args"), Some(24));
        assert_eq!(parse_field_offset(FORK, "child"), None);
    }
}
