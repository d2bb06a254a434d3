//! GPU tests (the `cuda` feature): every op on the GPU against the CPU.
//! Without a usable GPU each test prints why it skipped, and passes.

use deriv::backend::cuda;
use deriv::Device;

#[test]
fn write_ptx() {
    // scripts/check-ptx.sh runs this to get the PTX for ptxas.
    let ptx = cuda::ptx_source();
    assert!(ptx.starts_with(".version 8.0\n.target sm_80"));
    if let Ok(path) = std::env::var("DERIV_PTX_OUT") {
        std::fs::write(&path, &ptx).expect("write the PTX");
        println!("wrote {} bytes of PTX to {path}", ptx.len());
    }
    let _ = Device::Cpu;
}
