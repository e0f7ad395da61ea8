//! The CUDA solver: tables computed, hashed and kept in GPU memory; the walk runs there too.
//!
//! Nothing here needs CUDA to build: cudarc loads `libcuda`, `libnvrtc` and `libcublas` at run
//! time. Creating a context without the driver library panics inside cudarc, so
//! [`CudaSolver::new`] first checks that each library loads and returns an error naming the
//! missing one; callers fall back to the CPU solver and say why.
//!
//! One table (`Solver::compute`, per table; nothing large crosses PCIe either way):
//! 1. `cairn_generate` writes `A` (rows already in shuffled order) and `Bᵀ` straight into
//!    device memory, one thread per 64-byte ChaCha20 block: the same counter-mode stream the
//!    CPU side reads (RFC 8439 block function, 96-bit zero nonce, block counter = offset/64).
//! 2. `cublasGemmEx` with int8 inputs, int32 output and `CUBLAS_COMPUTE_32I`, in the "TN"
//!    layout the int8 tensor-core paths want, into the table's own allocation. cuBLAS is
//!    column-major; reading our row-major buffers column-major, `bt` is `B` (k × n) and `a`
//!    is `aᵀ`, so `D = op(bt)ᵀ·a` with `transa = T` is `Cᵀ` column-major: `C` row-major.
//! 3. `cairn_chunks` hashes every 256-value chunk of every row (SHA-256, one thread per
//!    chunk: a million threads for a 16,384² table) and `cairn_leaves` each row's leaf over
//!    its chunks' digests ([`cairn_popw::row_leaf`]); only the leaves (32 bytes a row) are copied
//!    back, and the host builds the Merkle root from them.
//!
//! The tables stay allocated for the memory phase: `cairn_walk` runs every chain of the walk
//! at once, one block of 256 threads per chain (each step: every thread sums its share of the
//! run's digest, a tree reduction in shared memory, thread 0 picks the next run), so no step
//! waits on the host and a thousand chains in flight read at the memory's full bandwidth. The
//! audit copies back the rows it opens.
//!
//! The kernels are checked without a GPU too: `tests/cuda.rs` compiles them as C (one POSIX
//! thread per CUDA thread for the walk) and compares every output with the CPU's, and
//! compiles them with NVRTC and `ptxas` for each catalog architecture, refusing any kernel
//! that spills to local memory.

use crate::prover::{Retained, Table, check_walk_over};
use crate::solve::{SolveError, Solver};
use cairn_popw::{CHUNK_TAG, Challenge, LEAF_CHUNK, Params, ROW_TAG};
use cairn_primitives::Hash;
use cudarc::cublas::{CudaBlas, result as blas, sys as blas_sys};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, LaunchConfig,
    PushKernelArg,
};
use cudarc::nvrtc::Ptx;
use rayon::prelude::*;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The CUDA C source of the solver's kernels: the input generator, the two levels of row
/// hashing and the memory walk. Public so that a test can compile it as plain C on a machine
/// without a GPU (behind a few lines of shims, with one POSIX thread per CUDA thread for the
/// walk's block) and compare what it writes with the CPU's stream, leaves and walk, and so
/// that another can compile it with NVRTC.
#[doc(hidden)]
pub const KERNEL_SOURCE: &str = r#"
#define ROTL(x, n) (((x) << (n)) | ((x) >> (32 - (n))))
#define ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))
#define BSWAP(x) ((((x) & 0xffu) << 24) | (((x) & 0xff00u) << 8) | \
                  (((x) >> 8) & 0xff00u) | ((x) >> 24))
#define QR(a, b, c, d) \
    a += b; d ^= a; d = ROTL(d, 16); \
    c += d; b ^= c; b = ROTL(b, 12); \
    a += b; d ^= a; d = ROTL(d, 8);  \
    c += d; b ^= c; b = ROTL(b, 7);

// Writes an n x n int8 matrix: row r of `out` is row (shuffle ? (mul*r + add) mod n : r) of
// the ChaCha20 keystream laid out row-major. One thread per 64-byte block; n % 64 == 0.
extern "C" __global__ void cairn_generate(
    unsigned int *out, unsigned int n,
    unsigned int k0, unsigned int k1, unsigned int k2, unsigned int k3,
    unsigned int k4, unsigned int k5, unsigned int k6, unsigned int k7,
    unsigned long long mul, unsigned long long add, int shuffle)
{
    unsigned long long blk = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    unsigned long long nn = (unsigned long long)n;
    if (blk >= nn * nn / 64) return;
    unsigned long long o = blk * 64;
    unsigned long long r = o / nn, c0 = o % nn;
    unsigned long long src = shuffle ? (mul * r + add) % nn : r;
    unsigned int counter = (unsigned int)((src * nn + c0) / 64);
    unsigned int s[16] = {
        0x61707865u, 0x3320646eu, 0x79622d32u, 0x6b206574u,
        k0, k1, k2, k3, k4, k5, k6, k7,
        counter, 0u, 0u, 0u };
    unsigned int x[16];
    #pragma unroll
    for (int i = 0; i < 16; i++) x[i] = s[i];
    #pragma unroll
    for (int i = 0; i < 10; i++) {
        QR(x[0], x[4], x[8], x[12]); QR(x[1], x[5], x[9], x[13]);
        QR(x[2], x[6], x[10], x[14]); QR(x[3], x[7], x[11], x[15]);
        QR(x[0], x[5], x[10], x[15]); QR(x[1], x[6], x[11], x[12]);
        QR(x[2], x[7], x[8], x[13]); QR(x[3], x[4], x[9], x[14]);
    }
    uint4 *dst = (uint4 *)(out + o / 4);
    dst[0] = make_uint4(x[0] + s[0], x[1] + s[1], x[2] + s[2], x[3] + s[3]);
    dst[1] = make_uint4(x[4] + s[4], x[5] + s[5], x[6] + s[6], x[7] + s[7]);
    dst[2] = make_uint4(x[8] + s[8], x[9] + s[9], x[10] + s[10], x[11] + s[11]);
    dst[3] = make_uint4(x[12] + s[12], x[13] + s[13], x[14] + s[14], x[15] + s[15]);
}

__constant__ unsigned int CAIRN_SHA_K[64] = {
    0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u, 0x3956c25bu, 0x59f111f1u, 0x923f82a4u,
    0xab1c5ed5u, 0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u, 0x72be5d74u, 0x80deb1feu,
    0x9bdc06a7u, 0xc19bf174u, 0xe49b69c1u, 0xefbe4786u, 0x0fc19dc6u, 0x240ca1ccu, 0x2de92c6fu,
    0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau, 0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u,
    0xc6e00bf3u, 0xd5a79147u, 0x06ca6351u, 0x14292967u, 0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu,
    0x53380d13u, 0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u, 0xa2bfe8a1u, 0xa81a664bu,
    0xc24b8b70u, 0xc76c51a3u, 0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u, 0x19a4c116u,
    0x1e376c08u, 0x2748774cu, 0x34b0bcb5u, 0x391c0cb3u, 0x4ed8aa4au, 0x5b9cca4fu, 0x682e6ff3u,
    0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u, 0x90befffau, 0xa4506cebu, 0xbef9a3f7u,
    0xc67178f2u };

// One SHA-256 compression of the block `w` (big-endian words, overwritten) into `h`.
__device__ __forceinline__ void cairn_sha_block(unsigned int *h, unsigned int *w)
{
    unsigned int a = h[0], b = h[1], c = h[2], d = h[3];
    unsigned int e = h[4], f = h[5], g = h[6], k = h[7];
    #pragma unroll
    for (int i = 0; i < 64; i++) {
        unsigned int wi;
        if (i < 16) {
            wi = w[i];
        } else {
            unsigned int x = w[(i + 1) & 15], y = w[(i + 14) & 15];
            unsigned int s0 = ROTR(x, 7) ^ ROTR(x, 18) ^ (x >> 3);
            unsigned int s1 = ROTR(y, 17) ^ ROTR(y, 19) ^ (y >> 10);
            wi = w[i & 15] + s0 + w[(i + 9) & 15] + s1;
            w[i & 15] = wi;
        }
        unsigned int t1 = k + (ROTR(e, 6) ^ ROTR(e, 11) ^ ROTR(e, 25)) + ((e & f) ^ (~e & g))
            + CAIRN_SHA_K[i] + wi;
        unsigned int t2 = (ROTR(a, 2) ^ ROTR(a, 13) ^ ROTR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d;
    h[4] += e; h[5] += f; h[6] += g; h[7] += k;
}

// SHA-256 of a 64-byte header block (the 16-byte tag as four words, zeros, `index`) followed
// by `words` 32-bit words of `body` (byte-swapped first when `swap`: little-endian int32 as
// the bytes the CPU hashes). `body` is 16-byte aligned. The digest's eight words go to `out`.
__device__ __forceinline__ void cairn_sha_tagged(
    const unsigned int *tag, unsigned int index, const unsigned int *body, unsigned int words,
    int swap, unsigned int *out)
{
    unsigned int h[8] = {
        0x6a09e667u, 0xbb67ae85u, 0x3c6ef372u, 0xa54ff53au,
        0x510e527fu, 0x9b05688cu, 0x1f83d9abu, 0x5be0cd19u };
    unsigned int w[16];
    #pragma unroll
    for (int i = 0; i < 16; i++) w[i] = i < 4 ? tag[i] : (i == 15 ? index : 0u);
    cairn_sha_block(h, w);
    unsigned long long bits = (64ull + 4ull * words) * 8ull;
    // The body, 0x80 as the next word, zeros, and the length in the last two words.
    unsigned int padded = (words + 3 + 15) / 16 * 16;
    for (unsigned int b = 0; b < padded; b += 16) {
        if (b + 16 <= words) {
            const uint4 *p = (const uint4 *)(body + b);
            #pragma unroll
            for (int q = 0; q < 4; q++) {
                uint4 v = p[q];
                w[4 * q] = v.x; w[4 * q + 1] = v.y; w[4 * q + 2] = v.z; w[4 * q + 3] = v.w;
            }
            if (swap) {
                #pragma unroll
                for (int i = 0; i < 16; i++) w[i] = BSWAP(w[i]);
            }
        } else {
            #pragma unroll
            for (int i = 0; i < 16; i++) {
                unsigned int j = b + i, v = 0u;
                if (j < words) v = swap ? BSWAP(body[j]) : body[j];
                else if (j == words) v = 0x80000000u;
                else if (j == padded - 2) v = (unsigned int)(bits >> 32);
                else if (j == padded - 1) v = (unsigned int)bits;
                w[i] = v;
            }
        }
        cairn_sha_block(h, w);
    }
    #pragma unroll
    for (int i = 0; i < 8; i++) out[i] = h[i];
}

// First level of a table's row leaves: the digest of every chunk of m values (one thread per
// chunk; n % m == 0, m % 16 == 0) into `out`, eight words each, chunk (r, c) at r*(n/m) + c.
extern "C" __global__ void cairn_chunks(
    const unsigned int *table, unsigned int n, unsigned int m,
    unsigned int t0, unsigned int t1, unsigned int t2, unsigned int t3, unsigned int *out)
{
    unsigned long long g = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    unsigned long long per_row = n / m;
    if (g >= (unsigned long long)n * per_row) return;
    unsigned int tag[4] = { t0, t1, t2, t3 };
    cairn_sha_tagged(tag, (unsigned int)(g % per_row), table + g * m, m, 1, out + g * 8);
}

// Second level: row r's leaf over its chunks' digests (one thread per row).
extern "C" __global__ void cairn_leaves(
    const unsigned int *chunks, unsigned int n, unsigned int per_row,
    unsigned int t0, unsigned int t1, unsigned int t2, unsigned int t3, unsigned int *out)
{
    unsigned long long r = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= n) return;
    unsigned int tag[4] = { t0, t1, t2, t3 };
    cairn_sha_tagged(tag, (unsigned int)r, chunks + r * per_row * 8, per_row * 8, 0, out + r * 8);
}

__device__ __forceinline__ unsigned long long cairn_splitmix(unsigned long long z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// The memory walk: chain c in block c (blockDim.x a power of two, at most 1024), `steps`
// runs of `rows` rows read one after another, each chosen by the state the previous run's
// digest left, from starts[c]. `tables` holds each table's device address; chain c's digests
// go to out[c*steps ...]. Many blocks in flight keep every memory channel busy.
extern "C" __global__ void cairn_walk(
    const unsigned long long *tables, unsigned int ntables, unsigned int n, unsigned int rows,
    const unsigned long long *starts, unsigned int steps, unsigned long long *out)
{
    __shared__ unsigned long long part[1024];
    __shared__ unsigned long long state;
    unsigned int t = threadIdx.x;
    unsigned long long c = blockIdx.x;
    unsigned long long len = (unsigned long long)rows * n;
    unsigned long long runs = n / rows;
    if (t == 0) state = starts[c];
    __syncthreads();
    for (unsigned int i = 0; i < steps; i++) {
        unsigned long long s = state;
        const int *run = (const int *)tables[(s >> 32) % ntables]
            + (s & 0xffffffffull) % runs * len;
        unsigned long long acc = 0;
        #pragma unroll 4
        for (unsigned long long j = t; j < len; j += blockDim.x)
            acc += (unsigned long long)(long long)run[j] * ((2ull * j + 1) * 0x9E3779B97F4A7C15ull);
        part[t] = acc;
        __syncthreads();
        for (unsigned int half = blockDim.x / 2; half > 0; half >>= 1) {
            if (t < half) part[t] += part[t + half];
            __syncthreads();
        }
        if (t == 0) {
            out[c * steps + i] = part[0];
            state = cairn_splitmix(s ^ part[0]);
        }
        __syncthreads();
    }
}
"#;

/// [`KERNEL_SOURCE`] compiled by NVRTC into PTX for the oldest architecture NVRTC targets,
/// which the driver compiles on for the GPU it loads on: what the CUDA solver runs. Needs
/// `libnvrtc`, not a GPU.
#[doc(hidden)]
pub fn compile_kernels() -> Result<Ptx, SolveError> {
    if !nvrtc_present() {
        return Err(SolveError::Device(
            "libnvrtc.so could not be loaded (install the CUDA runtime's nvrtc library)".into(),
        ));
    }
    cudarc::nvrtc::compile_ptx(KERNEL_SOURCE)
        .map_err(|e| device_err("compiling the kernels")(&format!("{e:?}")))
}

fn nvrtc_present() -> bool {
    // SAFETY: only tries to dlopen the library's candidate names and drops the handle.
    #[allow(unsafe_code)]
    unsafe {
        cudarc::nvrtc::sys::is_culib_present()
    }
}

/// Why CUDA cannot be used here, in words an operator can act on; `None` when it can.
pub fn cuda_unavailable() -> Option<String> {
    // SAFETY: each call only tries to dlopen the library's candidate names and drops the
    // handle; no symbol is resolved or called.
    #[allow(unsafe_code)]
    let (driver, cublas) = unsafe {
        (
            cudarc::driver::sys::is_culib_present(),
            cudarc::cublas::sys::is_culib_present(),
        )
    };
    let nvrtc = nvrtc_present();
    if !driver {
        return Some(
            "no CUDA driver: libcuda.so could not be loaded (install the NVIDIA driver)".into(),
        );
    }
    if !nvrtc {
        return Some(
            "libnvrtc.so could not be loaded (install the CUDA runtime's nvrtc library)".into(),
        );
    }
    if !cublas {
        return Some(
            "libcublas.so could not be loaded (install the CUDA runtime's cuBLAS library)".into(),
        );
    }
    match CudaContext::device_count() {
        Ok(0) => Some("the CUDA driver loads but sees no GPU".into()),
        Ok(_) => None,
        Err(e) => Some(format!("the CUDA driver failed to initialize: {e}")),
    }
}

/// Solves challenges on one NVIDIA GPU, keeping the tables in its memory.
pub struct CudaSolver {
    name: String,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    kernels: Kernels,
    // cuBLAS handles are not safe to use from two threads at once.
    blas: Mutex<CudaBlas>,
    /// GPU memory allocated ahead of a challenge by [`Solver::prepare`].
    prepared: Mutex<Option<Allocation>>,
}

/// Everything one challenge's tables need on the GPU.
struct Allocation {
    buf: Buffers,
    tables: Vec<CudaSlice<i32>>,
}

#[derive(Clone)]
struct Kernels {
    generate: CudaFunction,
    chunks: CudaFunction,
    leaves: CudaFunction,
    walk: CudaFunction,
}

fn device_err(what: &str) -> impl Fn(&dyn std::fmt::Display) -> SolveError + '_ {
    move |e| SolveError::Device(format!("{what}: {e}"))
}

/// A 16-byte tag as the four big-endian words SHA-256 reads.
fn tag_words(tag: &[u8; 16]) -> [u32; 4] {
    let mut w = [0u32; 4];
    for (i, c) in tag.chunks_exact(4).enumerate() {
        w[i] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
    }
    w
}

/// Values per chunk in a table of dimension `n` (a row shorter than a chunk is one chunk).
fn chunk_len(n: u32) -> u32 {
    n.min(LEAF_CHUNK as u32)
}

/// A launch of `total` threads in blocks of `threads`.
fn grid(total: u64, threads: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (total.div_ceil(u64::from(threads)) as u32, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

impl CudaSolver {
    /// A solver on GPU `ordinal`, or why there cannot be one.
    pub fn new(ordinal: usize) -> Result<Self, SolveError> {
        if let Some(why) = cuda_unavailable() {
            return Err(SolveError::Device(why));
        }
        let ctx =
            CudaContext::new(ordinal).map_err(|e| device_err("creating a CUDA context")(&e))?;
        let gpu = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let ptx = compile_kernels()?;
        let module = ctx
            .load_module(ptx)
            .map_err(|e| device_err("loading the kernels")(&e))?;
        let load = |name: &str| {
            module
                .load_function(name)
                .map_err(|e| device_err("loading the kernels")(&format!("{name}: {e}")))
        };
        let kernels = Kernels {
            generate: load("cairn_generate")?,
            chunks: load("cairn_chunks")?,
            leaves: load("cairn_leaves")?,
            walk: load("cairn_walk")?,
        };
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(stream.clone()).map_err(|e| device_err("creating cuBLAS")(&e))?;
        Ok(Self {
            name: format!("CUDA ({gpu}, cuBLAS int8)"),
            ctx,
            stream,
            kernels,
            blas: Mutex::new(blas),
            prepared: Mutex::new(None),
        })
    }

    /// Allocates `count` tables of `n²` and the scratch to compute them, after checking that
    /// they fit in the GPU memory free now.
    fn allocate(&self, n: u32, count: u32) -> Result<Allocation, SolveError> {
        let table_bytes = 4 * u64::from(n) * u64::from(n);
        // Tables, inputs and hashing scratch; what cuBLAS and the walk need besides is small.
        let need = table_bytes * u64::from(count) + table_bytes / 2 + table_bytes / 32;
        let (free, all) = self.memory()?;
        if need > free {
            return Err(SolveError::Device(format!(
                "the challenge keeps {} MiB of tables on the GPU ({count} of {n}²); it has {} \
                 MiB free of {} MiB",
                need >> 20,
                free >> 20,
                all >> 20
            )));
        }
        Ok(Allocation {
            buf: self.buffers(n)?,
            tables: (0..count)
                .map(|_| self.alloc_table(n))
                .collect::<Result<_, _>>()?,
        })
    }

    /// GPU memory free now and in all, in bytes.
    pub fn memory(&self) -> Result<(u64, u64), SolveError> {
        let (free, total) = self
            .ctx
            .mem_get_info()
            .map_err(|e| device_err("reading GPU memory")(&e))?;
        Ok((free as u64, total as u64))
    }

    fn generate(
        &self,
        out: &mut CudaSlice<i8>,
        n: u32,
        key: &[u8; 32],
        shuffle: Option<(u64, u64)>,
    ) -> Result<(), SolveError> {
        let k: Vec<u32> = key
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let (mul, add) = shuffle.unwrap_or((1, 0));
        let flag = i32::from(shuffle.is_some());
        let mut launch = self.stream.launch_builder(&self.kernels.generate);
        launch.arg(out).arg(&n);
        for w in &k {
            launch.arg(w);
        }
        launch.arg(&mul).arg(&add).arg(&flag);
        // SAFETY: the kernel's signature is (u32*, u32, u32 × 8, u64, u64, i32), matching the
        // arguments pushed above in order; it writes n²/64 blocks of 64 bytes, exactly `out`
        // (allocated n² bytes by the caller, n a multiple of 64), and reads nothing else.
        #[allow(unsafe_code)]
        unsafe { launch.launch(grid(u64::from(n) * u64::from(n) / 64, 256)) }
            .map_err(|e| device_err("generating inputs")(&e))?;
        Ok(())
    }

    /// `c = a · btᵀ` for `n × n` device buffers.
    fn gemm(
        &self,
        a: &CudaSlice<i8>,
        bt: &CudaSlice<i8>,
        c: &mut CudaSlice<i32>,
        n: u32,
    ) -> Result<(), SolveError> {
        let blas = self
            .blas
            .lock()
            .map_err(|_| SolveError::Device("cuBLAS handle poisoned".into()))?;
        let n = n as i32;
        let (alpha, beta) = (1i32, 0i32);
        let (pa, _ra) = a.device_ptr(&self.stream);
        let (pb, _rb) = bt.device_ptr(&self.stream);
        let (pc, _rc) = c.device_ptr_mut(&self.stream);
        // SAFETY: the three buffers are n² elements each on this solver's stream (checked by
        // the callers), leading dimensions are n, alpha and beta are host int32 scalars as
        // CUBLAS_COMPUTE_32I requires in the default host pointer mode, and the handle is
        // bound to the same stream and held exclusively through the mutex.
        #[allow(unsafe_code)]
        unsafe {
            blas::gemm_ex(
                *blas.handle(),
                blas_sys::cublasOperation_t::CUBLAS_OP_T,
                blas_sys::cublasOperation_t::CUBLAS_OP_N,
                n,
                n,
                n,
                (&alpha) as *const i32 as *const _,
                pb as *const _,
                blas_sys::cudaDataType_t::CUDA_R_8I,
                n,
                pa as *const _,
                blas_sys::cudaDataType_t::CUDA_R_8I,
                n,
                (&beta) as *const i32 as *const _,
                pc as *mut _,
                blas_sys::cudaDataType_t::CUDA_R_32I,
                n,
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32I,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| device_err("cuBLAS int8 GEMM")(&e))
    }

    /// The row leaves of the `n × n` table `c`, hashed on the GPU (chunks, then rows) through
    /// the scratch buffers `chunks` (n²/8 words) and `leaves` (8n words).
    fn hash_rows(
        &self,
        c: &CudaSlice<i32>,
        n: u32,
        chunks: &mut CudaSlice<u32>,
        leaves: &mut CudaSlice<u32>,
    ) -> Result<Vec<Hash>, SolveError> {
        let m = chunk_len(n);
        let per_row = n / m;
        let chunk_tag = tag_words(CHUNK_TAG);
        let row_tag = tag_words(ROW_TAG);
        let mut launch = self.stream.launch_builder(&self.kernels.chunks);
        launch.arg(c).arg(&n).arg(&m);
        for w in &chunk_tag {
            launch.arg(w);
        }
        launch.arg(&mut *chunks);
        // SAFETY: (u32*, u32, u32, u32 × 4, u32*) as pushed; it reads the n² values of `c`
        // and writes 8 words for each of the n·(n/m) chunks, exactly `chunks` (n and m
        // powers of two, m = min(n, 256) ≥ 64: checked by `buffers`).
        #[allow(unsafe_code)]
        unsafe { launch.launch(grid(u64::from(n) * u64::from(per_row), 128)) }
            .map_err(|e| device_err("hashing rows")(&e))?;
        let mut launch = self.stream.launch_builder(&self.kernels.leaves);
        launch.arg(&*chunks).arg(&n).arg(&per_row);
        for w in &row_tag {
            launch.arg(w);
        }
        launch.arg(&mut *leaves);
        // SAFETY: (u32*, u32, u32, u32 × 4, u32*) as pushed; it reads the chunk digests just
        // written and writes 8 words for each of the n rows, exactly `leaves`.
        #[allow(unsafe_code)]
        unsafe { launch.launch(grid(u64::from(n), 128)) }
            .map_err(|e| device_err("hashing rows")(&e))?;
        let words = self
            .stream
            .clone_dtoh(&*leaves)
            .map_err(|e| device_err("copying row leaves back")(&e))?;
        Ok(words
            .chunks_exact(8)
            .map(|d| {
                let mut h = [0u8; 32];
                for (i, w) in d.iter().enumerate() {
                    h[4 * i..4 * i + 4].copy_from_slice(&w.to_be_bytes());
                }
                Hash(h)
            })
            .collect())
    }

    fn buffers(&self, n: u32) -> Result<Buffers, SolveError> {
        if n < 64 || !n.is_power_of_two() {
            return Err(SolveError::Device(format!(
                "the CUDA solver needs n a power of two of at least 64, got {n}"
            )));
        }
        let nn = n as usize * n as usize;
        let alloc = device_err("allocating GPU memory");
        Ok(Buffers {
            a: self.stream.alloc_zeros::<i8>(nn).map_err(|e| alloc(&e))?,
            bt: self.stream.alloc_zeros::<i8>(nn).map_err(|e| alloc(&e))?,
            chunks: self
                .stream
                .alloc_zeros::<u32>(nn / chunk_len(n) as usize * 8)
                .map_err(|e| alloc(&e))?,
            leaves: self
                .stream
                .alloc_zeros::<u32>(n as usize * 8)
                .map_err(|e| alloc(&e))?,
        })
    }

    /// One table into `c`: inputs generated, the product, nothing copied back.
    fn table(
        &self,
        challenge: &Challenge,
        buf: &mut Buffers,
        c: &mut CudaSlice<i32>,
    ) -> Result<(), SolveError> {
        let n = challenge.n;
        let (ka, kb, mul, add) = challenge.derivation();
        self.generate(&mut buf.a, n, &ka, Some((mul, add)))?;
        self.generate(&mut buf.bt, n, &kb, None)?;
        self.gemm(&buf.a, &buf.bt, c, n)
    }

    /// The GEMM alone, `reps` times at dimension `n` on resident inputs: the device's int8
    /// rate in ops/s (a multiply-add counts two), to compare with its class's peak.
    pub fn gemm_rate(&self, n: u32, reps: u32) -> Result<(f64, Duration), SolveError> {
        let mut buf = self.buffers(n)?;
        let mut c = self.alloc_table(n)?;
        let challenge =
            Challenge::new([0x5a; 32], n).map_err(|e| SolveError::Device(e.to_string()))?;
        // Warm up: cuBLAS picks and loads its kernel on the first call.
        self.table(&challenge, &mut buf, &mut c)?;
        self.sync()?;
        let start = Instant::now();
        for _ in 0..reps.max(1) {
            self.gemm(&buf.a, &buf.bt, &mut c, n)?;
        }
        self.sync()?;
        let took = start.elapsed();
        let ops = 2.0 * f64::from(n).powi(3) * f64::from(reps.max(1));
        Ok((ops / took.as_secs_f64().max(1e-9), took))
    }

    fn alloc_table(&self, n: u32) -> Result<CudaSlice<i32>, SolveError> {
        self.stream
            .alloc_zeros::<i32>(n as usize * n as usize)
            .map_err(|e| device_err("allocating GPU memory")(&e))
    }

    fn sync(&self) -> Result<(), SolveError> {
        self.stream
            .synchronize()
            .map_err(|e| device_err("waiting for the GPU")(&e))
    }
}

struct Buffers {
    a: CudaSlice<i8>,
    bt: CudaSlice<i8>,
    chunks: CudaSlice<u32>,
    leaves: CudaSlice<u32>,
}

impl Solver for CudaSolver {
    fn name(&self) -> String {
        self.name.clone()
    }

    /// Allocates the challenge's tables and scratch now, so that the timed compute phase
    /// starts computing at once (a device knows its class's parameters long before a nonce).
    fn prepare(&self, params: &Params) -> Result<(), SolveError> {
        let mut slot = self
            .prepared
            .lock()
            .map_err(|_| SolveError::Device("GPU allocation poisoned".into()))?;
        // Free what an earlier preparation left before allocating again.
        *slot = None;
        *slot = Some(self.allocate(params.n, params.tables)?);
        Ok(())
    }

    fn solve(&self, challenge: &Challenge) -> Result<Vec<i32>, SolveError> {
        let mut buf = self.buffers(challenge.n)?;
        let mut c = self.alloc_table(challenge.n)?;
        self.table(challenge, &mut buf, &mut c)?;
        self.stream
            .clone_dtoh(&c)
            .map_err(|e| device_err("copying the result back")(&e))
    }

    /// Every table computed and hashed on the GPU and kept in its memory; only the row
    /// leaves (32 bytes a row) cross to the host, which builds the Merkle roots from them on
    /// every core once the last table is done.
    fn compute(
        &self,
        challenges: Vec<Challenge>,
        progress: &mut dyn FnMut(u32, u32),
    ) -> Result<(Vec<Table>, Box<dyn Retained>), SolveError> {
        let total = challenges.len() as u32;
        let Some(n) = challenges.first().map(|c| c.n) else {
            return Err(SolveError::Device("no tables to compute".into()));
        };
        if let Some(c) = challenges.iter().find(|c| c.n != n) {
            return Err(SolveError::Device(format!(
                "tables of dimension {n} and {} in one challenge",
                c.n
            )));
        }
        let prepared = self
            .prepared
            .lock()
            .map_err(|_| SolveError::Device("GPU allocation poisoned".into()))?
            .take()
            .filter(|p| {
                p.tables
                    .first()
                    .is_some_and(|t| t.len() == (n as usize).pow(2))
            })
            .filter(|p| p.tables.len() == challenges.len());
        let Allocation {
            mut buf,
            tables: mut kept,
        } = match prepared {
            Some(p) => p,
            None => self.allocate(n, total)?,
        };
        let mut leaves = Vec::with_capacity(challenges.len());
        for (k, (c, values)) in challenges.iter().zip(&mut kept).enumerate() {
            self.table(c, &mut buf, values)?;
            leaves.push(self.hash_rows(values, n, &mut buf.chunks, &mut buf.leaves)?);
            progress(k as u32 + 1, total);
        }
        let tables = challenges
            .into_par_iter()
            .zip(leaves)
            .map(|(c, l)| Table::from_leaves(c, l))
            .collect();
        let addresses: Vec<u64> = kept
            .iter()
            .map(|t| {
                let (p, _sync) = t.device_ptr(&self.stream);
                p
            })
            .collect();
        let addresses = self
            .stream
            .clone_htod(&addresses)
            .map_err(|e| device_err("copying table addresses")(&e))?;
        Ok((
            tables,
            Box::new(CudaTables {
                n,
                stream: self.stream.clone(),
                walk: self.kernels.walk.clone(),
                tables: kept,
                addresses,
            }),
        ))
    }
}

/// Tables kept in GPU memory; the walk runs there too.
struct CudaTables {
    n: u32,
    stream: Arc<CudaStream>,
    walk: CudaFunction,
    tables: Vec<CudaSlice<i32>>,
    /// Each table's device address, for the walk kernel.
    addresses: CudaSlice<u64>,
}

impl Retained for CudaTables {
    fn row(&self, table: u32, row: u32) -> Result<Vec<i32>, SolveError> {
        let n = self.n as usize;
        let t = self
            .tables
            .get(table as usize)
            .filter(|_| row < self.n)
            .ok_or(SolveError::NoSuchRow { table, row })?;
        let r = row as usize;
        self.stream
            .clone_dtoh(&t.slice(r * n..(r + 1) * n))
            .map_err(|e| device_err("copying a row back")(&e))
    }

    fn walk(&self, params: &Params, starts: &[u64]) -> Result<Vec<u64>, SolveError> {
        check_walk_over(params, self.n, self.tables.len())?;
        if starts.is_empty() || params.walk_steps == 0 {
            return Ok(Vec::new());
        }
        let steps = params.walk_steps;
        let chains = starts.len();
        let alloc = device_err("allocating GPU memory");
        let mut out = self
            .stream
            .alloc_zeros::<u64>(chains * steps as usize)
            .map_err(|e| alloc(&e))?;
        let starts_dev = self
            .stream
            .clone_htod(starts)
            .map_err(|e| device_err("copying the walk's starts")(&e))?;
        let ntables = self.tables.len() as u32;
        let threads = 256u32;
        let mut launch = self.stream.launch_builder(&self.walk);
        launch
            .arg(&self.addresses)
            .arg(&ntables)
            .arg(&self.n)
            .arg(&params.walk_rows)
            .arg(&starts_dev)
            .arg(&steps)
            .arg(&mut out);
        let cfg = LaunchConfig {
            grid_dim: (chains as u32, 1, 1),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: (u64*, u32, u32, u32, u64*, u32, u64*) as pushed. `addresses` holds the
        // device address of each of `ntables` live n² int32 tables owned by `self`; every run
        // the kernel reads starts at a multiple of `rows` rows below n (rows divides n,
        // checked above), inside them; block c reads starts[c] (`chains` of them) and writes
        // steps digests from c·steps, inside `out`'s chains·steps. 256 threads, a power of two
        // as its reduction needs.
        #[allow(unsafe_code)]
        unsafe { launch.launch(cfg) }.map_err(|e| device_err("the memory walk")(&e))?;
        self.stream
            .clone_dtoh(&out)
            .map_err(|e| device_err("copying the walk back")(&e))
    }
}
