//! Any input: the policy parser returns a policy or an error, never panics, and everything
//! `policy check` and `policy explain` print about it renders.
#![no_main]

use std::path::Path;

use flamewarden_policy::policy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match policy::parse("fuzz.toml", text) {
        Ok(compiled) => {
            let _ = policy::layers(&compiled);
            let _ = policy::explain(&compiled);
            let _ = policy::summary(&compiled);
            if let Err(error) = compiled.resolve_paths(Path::new("/tmp"), Path::new("/bin/true")) {
                let _ = error.to_string();
            }
        }
        Err(error) => {
            let message = error.to_string();
            assert!(
                error.location().is_some(),
                "an error without a location: {message}"
            );
        }
    }
});
