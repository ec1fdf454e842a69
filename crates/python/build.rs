//! macOS needs `-undefined dynamic_lookup` to link an extension module
//! outside maturin (`cargo build --workspace`); a no-op elsewhere.
fn main() {
    pyo3_build_config::add_extension_module_link_args();
}
