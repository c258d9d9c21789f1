//! Any text: parsing + validation never panics; a registry that validates renders into Rust
//! that parses (the renderer runs `syn` on every file, so a render error here is a bug).
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use skillgen::Registry;
use skillgen::render::Templates;

fn templates() -> &'static Templates {
    static T: OnceLock<Templates> = OnceLock::new();
    T.get_or_init(|| {
        Templates::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates"))
            .expect("the repository's templates load")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Registry::parse_str(text, "fuzz.yaml") {
        Ok(registry) => {
            if let Err(e) = templates().render(&registry) {
                panic!("a valid registry failed to render: {e}\n--- input ---\n{text}");
            }
        }
        Err(e) => {
            // Every rejection is explained.
            assert!(!e.to_string().is_empty());
        }
    }
});
