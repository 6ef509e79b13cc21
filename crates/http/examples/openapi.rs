//! Prints the OpenAPI document to stdout; `cargo xtask openapi` runs this
//! and writes the output to `docs/openapi.json`.

use std::io::Write;

fn main() -> std::io::Result<()> {
    std::io::stdout().write_all(agentry_http::openapi_json().as_bytes())
}
