//! Determinism across solvers: the same nonce gives the same inputs, result and root on the
//! CPU and on the GPU.
//!
//! Two halves. The first runs everywhere: the CUDA input generator's source, compiled as
//! plain C by the host's C compiler behind a few lines of shims, must write exactly the bytes
//! the CPU reads from the ChaCha20 stream (shuffled `A` and `Bᵀ`). The second needs an NVIDIA
//! GPU: the CUDA solver's tables must equal the CPU solver's, entry for entry; without a GPU it
//! prints why it skipped and passes.

use cairn_popw::{Challenge, CpuSolver, CudaSolver, KERNEL_SOURCE, Solver, cuda_unavailable};
use std::process::Command;

const SHIM: &str = r#"
#include <stdio.h>
#include <stdlib.h>
typedef struct { unsigned int x, y, z, w; } uint4;
static uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) {
    uint4 u = { a, b, c, d }; return u;
}
static struct { unsigned long long x; } blockIdx, blockDim, threadIdx;
#define __global__
"#;

const MAIN: &str = r#"
int main(int argc, char **argv) {
    unsigned n = (unsigned)strtoul(argv[1], 0, 10), k[8];
    for (int i = 0; i < 8; i++) k[i] = (unsigned)strtoul(argv[2 + i], 0, 10);
    unsigned long long mul = strtoull(argv[10], 0, 10), add = strtoull(argv[11], 0, 10);
    int shuffle = atoi(argv[12]);
    unsigned *out = calloc((size_t)n * n / 4, 4);
    blockDim.x = 1;
    for (unsigned long long b = 0; b < (unsigned long long)n * n / 64; b++) {
        blockIdx.x = b;
        cairn_generate(out, n, k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7], mul, add, shuffle);
    }
    fwrite(out, 1, (size_t)n * n, stdout);
    return 0;
}
"#;

#[test]
fn the_cuda_input_kernel_writes_the_cpu_stream() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("kernel.c");
    // `extern "C"` is C++ linkage; C has no such thing.
    let kernel = KERNEL_SOURCE.replace("extern \"C\" ", "");
    std::fs::write(&src, format!("{SHIM}{kernel}{MAIN}")).unwrap();
    let bin = dir.path().join("kernel");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-O2", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("running the C compiler `{cc}`: {e}"));
    assert!(
        out.status.success(),
        "the kernel source does not compile as C:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for n in [64u32, 128, 512] {
        let c = Challenge::new([n as u8; 32], n).unwrap();
        let inputs = c.inputs();
        let (key_a, key_b, mul, add) = c.derivation();
        for (key, shuffle, want) in [(key_a, 1, &inputs.a), (key_b, 0, &inputs.bt)] {
            let mut args = vec![n.to_string()];
            args.extend(
                key.chunks_exact(4)
                    .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]).to_string()),
            );
            args.extend([mul.to_string(), add.to_string(), shuffle.to_string()]);
            let out = Command::new(&bin).args(&args).output().unwrap();
            assert!(out.status.success());
            let got: Vec<i8> = out.stdout.iter().map(|b| *b as i8).collect();
            assert!(
                got == *want,
                "n = {n}, shuffle = {shuffle}: the kernel's bytes differ from the CPU stream"
            );
        }
    }
}

#[test]
fn cpu_and_cuda_solvers_agree() {
    if let Some(why) = cuda_unavailable() {
        eprintln!("skipping the CUDA half of the agreement test: {why}");
        return;
    }
    let gpu = CudaSolver::new(0).expect("CUDA is available, so the solver must start");
    for (nonce, n) in [([1u8; 32], 64u32), ([2; 32], 256), ([3; 32], 1024)] {
        let c = Challenge::new(nonce, n).unwrap();
        let want = CpuSolver.solve(&c).unwrap();
        let got = gpu.solve(&c).unwrap();
        assert!(
            got == want,
            "n = {n}: {} disagrees with the CPU",
            gpu.name()
        );
        let rows = |v: &[i32]| {
            v.chunks(n as usize)
                .map(<[i32]>::to_vec)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            cairn_popw::rows_root(&rows(&got)),
            cairn_popw::rows_root(&rows(&want))
        );
    }
    let (rate, took) = gpu.gemm_rate(8192, 10).unwrap();
    eprintln!(
        "{}: int8 GEMM at n = 8192, 10 runs in {took:?}: {:.0} TOP/s",
        gpu.name(),
        rate / 1e12
    );
}
