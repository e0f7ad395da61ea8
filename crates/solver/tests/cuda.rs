//! Determinism across solvers: the same nonce gives the same inputs, tables, leaves, roots and
//! memory walk on the CPU and on the GPU.
//!
//! Three parts. The first runs everywhere: the CUDA kernels' source, compiled as plain C by the
//! host's C compiler behind a few lines of shims (one POSIX thread per CUDA thread, a barrier
//! for `__syncthreads`, for the walk's block), must write exactly what the CPU side computes:
//! the ChaCha20 stream (shuffled `A` and `Bᵀ`), the row leaves, and the walk's digests. The
//! second compiles the same source with NVRTC, CUDA's own compiler, which needs no GPU (its
//! library comes from PyPI when the machine has none). The third needs an NVIDIA GPU: the CUDA
//! solver's tables, roots, openings and walk must equal the CPU solver's; without a GPU it
//! prints why it skipped and passes.

use cairn_popw::{Challenge, Params, table_challenge};
use cairn_solver::{
    CpuSolver, CudaSolver, HostTables, Inputs, KERNEL_SOURCE, Prover, Retained, Solver,
    cuda_unavailable,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const SHIM: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
typedef struct { unsigned int x, y, z, w; } uint4;
static uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) {
    uint4 u = { a, b, c, d }; return u;
}
static struct { unsigned long long x; } blockIdx, blockDim;
static __thread struct { unsigned long long x; } threadIdx;
static pthread_barrier_t cairn_barrier;
#define __global__
#define __device__ static
#define __forceinline__ inline
#define __constant__ static const
#define __shared__ static
#define __syncthreads() pthread_barrier_wait(&cairn_barrier)
"#;

const MAIN: &str = r#"
static void *read_all(size_t bytes) {
    char *buf = malloc(bytes);
    if (fread(buf, 1, bytes, stdin) != bytes) { fprintf(stderr, "short input\n"); exit(2); }
    return buf;
}

/* Runs `threads` CUDA threads of one block, each as a POSIX thread. */
struct walk_args {
    unsigned long long *tables; unsigned ntables, n, rows, steps, tid;
    unsigned long long *starts, *out;
};
static void *walk_thread(void *p) {
    struct walk_args *a = p;
    threadIdx.x = a->tid;
    cairn_walk(a->tables, a->ntables, a->n, a->rows, a->starts, a->steps, a->out);
    return 0;
}

int main(int argc, char **argv) {
    const char *mode = argv[1];
    unsigned n = (unsigned)strtoul(argv[2], 0, 10);
    size_t nn = (size_t)n * n;
    if (!strcmp(mode, "generate")) {
        unsigned k[8];
        for (int i = 0; i < 8; i++) k[i] = (unsigned)strtoul(argv[3 + i], 0, 10);
        unsigned long long mul = strtoull(argv[11], 0, 10), add = strtoull(argv[12], 0, 10);
        int shuffle = atoi(argv[13]);
        unsigned *out = calloc(nn / 4, 4);
        blockDim.x = 1;
        for (unsigned long long b = 0; b < nn / 64; b++) {
            blockIdx.x = b;
            cairn_generate(out, n, k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7], mul, add,
                           shuffle);
        }
        fwrite(out, 1, nn, stdout);
    } else if (!strcmp(mode, "leaves")) {
        unsigned m = (unsigned)strtoul(argv[3], 0, 10), t[8];
        for (int i = 0; i < 8; i++) t[i] = (unsigned)strtoul(argv[4 + i], 0, 10);
        unsigned *table = read_all(nn * 4);
        unsigned per_row = n / m;
        unsigned *chunks = calloc((size_t)n * per_row * 8, 4), *leaves = calloc((size_t)n * 8, 4);
        blockDim.x = 32;
        for (unsigned long long b = 0; b * 32 < (unsigned long long)n * per_row; b++)
            for (unsigned i = 0; i < 32; i++) {
                blockIdx.x = b; threadIdx.x = i;
                cairn_chunks(table, n, m, t[0], t[1], t[2], t[3], chunks);
            }
        for (unsigned long long b = 0; b * 32 < n; b++)
            for (unsigned i = 0; i < 32; i++) {
                blockIdx.x = b; threadIdx.x = i;
                cairn_leaves(chunks, n, per_row, t[4], t[5], t[6], t[7], leaves);
            }
        fwrite(leaves, 4, (size_t)n * 8, stdout);
    } else if (!strcmp(mode, "walk")) {
        /* walk n ntables rows steps threads chains, then the chains' starts, in decimal */
        unsigned ntables = (unsigned)strtoul(argv[3], 0, 10);
        unsigned rows = (unsigned)strtoul(argv[4], 0, 10);
        unsigned steps = (unsigned)strtoul(argv[5], 0, 10);
        unsigned threads = (unsigned)strtoul(argv[6], 0, 10);
        unsigned chains = (unsigned)strtoul(argv[7], 0, 10);
        unsigned long long tables[64], *starts = calloc(chains, 8);
        unsigned long long *out = calloc((size_t)chains * steps, 8);
        for (unsigned c = 0; c < chains; c++) starts[c] = strtoull(argv[8 + c], 0, 10);
        for (unsigned k = 0; k < ntables; k++)
            tables[k] = (unsigned long long)(size_t)read_all(nn * 4);
        blockDim.x = threads;
        pthread_barrier_init(&cairn_barrier, 0, threads);
        pthread_t th[1024];
        struct walk_args args[1024];
        /* One block at a time: a block's threads share its __shared__ memory. */
        for (unsigned c = 0; c < chains; c++) {
            blockIdx.x = c;
            for (unsigned i = 0; i < threads; i++) {
                struct walk_args a = { tables, ntables, n, rows, steps, i, starts, out };
                args[i] = a;
                pthread_create(&th[i], 0, walk_thread, &args[i]);
            }
            for (unsigned i = 0; i < threads; i++) pthread_join(th[i], 0);
        }
        fwrite(out, 8, (size_t)chains * steps, stdout);
    }
    return 0;
}
"#;

/// The kernels compiled as C, once per test binary.
fn emulator() -> &'static Path {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("popw-kernels");
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("kernels.c");
        // `extern "C"` is C++ linkage; C has no such thing.
        let kernels = KERNEL_SOURCE.replace("extern \"C\" ", "");
        std::fs::write(&src, format!("{SHIM}{kernels}{MAIN}")).unwrap();
        let bin = dir.join("kernels");
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let out = Command::new(&cc)
            .args(["-O2", "-pthread", "-o"])
            .arg(&bin)
            .arg(&src)
            .output()
            .unwrap_or_else(|e| panic!("running the C compiler `{cc}`: {e}"));
        assert!(
            out.status.success(),
            "the kernel source does not compile as C:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        bin
    })
}

/// Runs the emulator with `args`, feeding it `input`; its output.
fn emulate(args: &[String], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(emulator())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "the emulated kernel failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn le_bytes(values: &[i32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn words(bytes: &[u8], big_endian: bool) -> Vec<String> {
    bytes
        .chunks_exact(4)
        .map(|c| {
            let w = [c[0], c[1], c[2], c[3]];
            if big_endian {
                u32::from_be_bytes(w)
            } else {
                u32::from_le_bytes(w)
            }
            .to_string()
        })
        .collect()
}

#[test]
fn the_cuda_input_kernel_writes_the_cpu_stream() {
    for n in [64u32, 128, 512] {
        let c = Challenge::new([n as u8; 32], n).unwrap();
        let inputs = Inputs::of(&c);
        let (key_a, key_b, mul, add) = c.derivation();
        for (key, shuffle, want) in [(key_a, 1, &inputs.a), (key_b, 0, &inputs.bt)] {
            let mut args = vec!["generate".to_string(), n.to_string()];
            args.extend(words(&key, false));
            args.extend([mul.to_string(), add.to_string(), shuffle.to_string()]);
            let got: Vec<i8> = emulate(&args, &[]).iter().map(|b| *b as i8).collect();
            assert!(
                got == *want,
                "n = {n}, shuffle = {shuffle}: the kernel's bytes differ from the CPU stream"
            );
        }
    }
}

#[test]
fn the_cuda_hash_kernels_write_the_cpu_row_leaves() {
    // One chunk a row (64, 256) and several (512, 1024): every path of the padding.
    for n in [64u32, 256, 512, 1024] {
        let c = table_challenge(&[n as u8; 32], 1, n).unwrap();
        let values = CpuSolver.solve(&c).unwrap();
        assert!(
            values.iter().any(|v| *v < 0),
            "negative entries are covered"
        );
        let want = Prover::from_values([0; 32], small(n, 1), vec![(c, values.clone())])
            .unwrap()
            .tables
            .remove(0);
        let mut args = vec![
            "leaves".to_string(),
            n.to_string(),
            n.min(cairn_popw::LEAF_CHUNK as u32).to_string(),
        ];
        args.extend(words(b"cairn/popw/chunk", true));
        args.extend(words(b"cairn/popw/row\0\0", true));
        let got = emulate(&args, &le_bytes(&values));
        let leaves: Vec<u8> = got
            .chunks_exact(4)
            .flat_map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]).to_be_bytes())
            .collect();
        let want: Vec<u8> = want.leaves().iter().flat_map(|h| h.0).collect();
        assert!(
            leaves == want,
            "n = {n}: the GPU's row leaves differ from the CPU's"
        );
    }
}

fn small(n: u32, tables: u32) -> Params {
    Params {
        n,
        tables,
        walk_chains: 5,
        walk_steps: 120,
        walk_rows: 4,
        audit_rows: 16,
        walk_checks: 4,
        audit_cols: n,
        rounds: 8,
        compute_deadline: Duration::from_secs(60),
        walk_deadline: Duration::from_secs(60),
    }
}

#[test]
fn the_cuda_walk_kernel_walks_the_cpu_walk() {
    // Runs of one row and of several; fewer threads than a run's values and more.
    for (n, tables, rows, threads) in [
        (64u32, 3u32, 1u32, 16u32),
        (256, 2, 4, 64),
        (128, 5, 16, 128),
    ] {
        let p = Params {
            walk_rows: rows,
            ..small(n, tables)
        };
        let values: Vec<Vec<i32>> = (0..tables)
            .map(|k| {
                CpuSolver
                    .solve(&table_challenge(&[9; 32], k, n).unwrap())
                    .unwrap()
            })
            .collect();
        let input: Vec<u8> = values.iter().flat_map(|v| le_bytes(v)).collect();
        let starts: Vec<u64> = (0..u64::from(p.walk_chains))
            .map(|c| 0x0123_4567_89ab_cdef_u64.wrapping_mul(c + 1) ^ u64::from(n))
            .collect();
        let want = HostTables::new(n, values)
            .unwrap()
            .walk(&p, &starts)
            .unwrap();
        assert_eq!(want.len(), p.walk_len());
        let args: Vec<String> = [
            "walk".to_string(),
            n.to_string(),
            tables.to_string(),
            rows.to_string(),
            p.walk_steps.to_string(),
            threads.to_string(),
            p.walk_chains.to_string(),
        ]
        .into_iter()
        .chain(starts.iter().map(u64::to_string))
        .collect();
        let got: Vec<u64> = emulate(&args, &input)
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(got.len(), want.len());
        assert!(
            got == want,
            "n = {n}, {tables} tables, {threads} threads: the GPU walk differs from the CPU's \
             from step {}",
            got.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(0)
        );
    }
}

/// CUDA's compiler library and assembler, pinned to the CUDA version the solver's bindings
/// target: NVRTC (what the solver compiles its kernels with) and `ptxas` (what the driver's
/// JIT does on a GPU, here to report each kernel's registers and spills). From the machine
/// when it has them, else PyPI's wheels (47 MB), unpacked once under the target directory.
struct CudaTools {
    /// A directory holding `libnvrtc.so.12`.
    nvrtc_lib: PathBuf,
    ptxas: PathBuf,
}

fn cuda_tools() -> CudaTools {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cuda-tools");
    let wheels = [
        (
            "nvidia-cuda-nvrtc-cu12==12.4.127",
            "nvidia/cuda_nvrtc/lib/libnvrtc.so.12",
        ),
        (
            "nvidia-cuda-nvcc-cu12==12.4.131",
            "nvidia/cuda_nvcc/bin/ptxas",
        ),
    ];
    for (wheel, file) in wheels {
        if dir.join(file).exists() {
            continue;
        }
        let download = dir.join("download");
        let _ = std::fs::remove_dir_all(&download);
        eprintln!("fetching {wheel} from PyPI (CUDA's compiler, no GPU needed)");
        let out = Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "-d",
            ])
            .arg(&download)
            .arg(wheel)
            .output()
            .expect("python3 runs pip, which fetches CUDA's compiler for this test");
        assert!(
            out.status.success(),
            "pip could not fetch {wheel}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let whl = std::fs::read_dir(&download)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "whl"))
            .expect("pip wrote the wheel");
        let out = Command::new("python3")
            .args(["-m", "zipfile", "-e"])
            .arg(&whl)
            .arg(&dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "unpacking {}", whl.display());
        assert!(dir.join(file).exists(), "{wheel} has no {file}");
    }
    let ptxas = dir.join("nvidia/cuda_nvcc/bin/ptxas");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ptxas, std::fs::Permissions::from_mode(0o755)).unwrap();
    CudaTools {
        nvrtc_lib: dir.join("nvidia/cuda_nvrtc/lib"),
        ptxas,
    }
}

/// Set in the child process that compiles with NVRTC: where to write the PTX.
const PTX_OUT: &str = "CAIRN_TEST_PTX_OUT";

#[test]
fn the_kernels_compile_for_every_catalog_gpu_without_spilling() {
    if let Some(out) = std::env::var_os(PTX_OUT) {
        // The child: libnvrtc is on its LD_LIBRARY_PATH (read once, when a process starts).
        let ptx = cairn_solver::compile_kernels().expect("NVRTC compiles the kernels");
        std::fs::write(out, ptx.to_src()).unwrap();
        return;
    }
    let tools = cuda_tools();
    let dir = tempfile::tempdir().unwrap();
    let ptx = dir.path().join("kernels.ptx");
    let library_path = match std::env::var("LD_LIBRARY_PATH") {
        Ok(p) if !p.is_empty() => format!("{}:{p}", tools.nvrtc_lib.display()),
        _ => tools.nvrtc_lib.display().to_string(),
    };
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "the_kernels_compile_for_every_catalog_gpu_without_spilling",
            "--nocapture",
        ])
        .env(PTX_OUT, &ptx)
        .env("LD_LIBRARY_PATH", library_path)
        .output()
        .unwrap();
    assert!(
        out.status.success() && ptx.exists(),
        "NVRTC failed on the kernels:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let src = std::fs::read_to_string(&ptx).unwrap();
    let kernels = [
        "cairn_generate",
        "cairn_chunks",
        "cairn_leaves",
        "cairn_walk",
    ];
    for k in kernels {
        assert!(src.contains(&format!(".entry {k}(")), "the PTX has no {k}");
    }
    // The catalog's architectures: Pascal (GTX 1080 Ti), Ampere (A100; RTX 30xx), Ada
    // (RTX 4090, L40S), Hopper (H100, H200).
    for arch in ["sm_61", "sm_80", "sm_86", "sm_89", "sm_90"] {
        let out = Command::new(&tools.ptxas)
            .args(["-v", "-arch", arch, "-o"])
            .arg(dir.path().join(format!("{arch}.cubin")))
            .arg(&ptx)
            .output()
            .unwrap();
        let info = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "ptxas {arch}: {info}");
        for k in kernels {
            let props = info
                .split(&format!("Function properties for {k}"))
                .nth(1)
                .and_then(|rest| rest.lines().nth(1))
                .unwrap_or_else(|| panic!("ptxas {arch} says nothing of {k}: {info}"));
            assert!(
                props.contains("0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads"),
                "{k} on {arch} uses local memory (slow on every GPU): {props}"
            );
        }
        if arch == "sm_90" {
            eprintln!("{info}");
        }
    }
}

#[test]
fn cpu_and_cuda_solvers_agree() {
    if let Some(why) = cuda_unavailable() {
        eprintln!("skipping the GPU half of the agreement test: {why}");
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
    }
    // The whole device side: tables kept in GPU memory, hashed there, walked there, opened.
    for (n, tables) in [(64u32, 3u32), (512, 2), (2048, 3)] {
        let p = small(n, tables);
        let nonce = [n as u8; 32];
        let cpu = Prover::solve(&CpuSolver, nonce, p.clone(), |_, _| {}).unwrap();
        let on_gpu = Prover::solve(&gpu, nonce, p.clone(), |_, _| {}).unwrap();
        for (a, b) in cpu.tables.iter().zip(&on_gpu.tables) {
            assert!(a.leaves() == b.leaves(), "n = {n}: row leaves differ");
            assert_eq!(a.root, b.root);
        }
        let walk = [5u8; 32];
        assert_eq!(
            cpu.walk(&walk).unwrap(),
            on_gpu.walk(&walk).unwrap(),
            "n = {n}"
        );
        for (t, r) in [(0, 0), (tables - 1, n - 1), (1, n / 3)] {
            assert_eq!(
                cpu.open(t, r).unwrap().values,
                on_gpu.open(t, r).unwrap().values
            );
        }
        assert!(on_gpu.open(tables, 0).is_err());
    }
    let (rate, took) = gpu.gemm_rate(8192, 10).unwrap();
    eprintln!(
        "{}: int8 GEMM at n = 8192, 10 runs in {took:?}: {:.0} TOP/s",
        gpu.name(),
        rate / 1e12
    );
}
