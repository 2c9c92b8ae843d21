fn main() {
    println!("cargo:rerun-if-changed=src/exec_shim.c");
    cc::Build::new().file("src/exec_shim.c").flag_if_supported("-Wall").compile("accel_exec_shim");
}
