//! The CUDA solver: inputs generated on the GPU, the product by cuBLAS.
//!
//! Nothing here needs CUDA to build: cudarc loads `libcuda`, `libnvrtc` and `libcublas` at run
//! time. Creating a context without the driver library panics inside cudarc, so
//! [`CudaSolver::new`] first checks that each library loads and returns an error naming the
//! missing one; callers fall back to the CPU solver and say why.
//!
//! One table:
//! 1. An NVRTC kernel writes `A` (rows already in shuffled order) and `Bᵀ` straight into
//!    device memory, one thread per 64-byte ChaCha20 block: the same counter-mode stream the
//!    CPU side reads (RFC 8439 block function, 96-bit zero nonce, block counter = offset/64),
//!    so nothing large crosses PCIe on the way in.
//! 2. `cublasGemmEx` with int8 inputs, int32 output and `CUBLAS_COMPUTE_32I`, in the "TN"
//!    layout the int8 tensor-core paths want. cuBLAS is column-major; reading our row-major
//!    buffers column-major, `bt` is `B` (k × n) and `a` is `aᵀ`, so `D = op(bt)ᵀ·a` with
//!    `transa = T` is `Cᵀ` column-major: `C` row-major, which is what we want.
//! 3. `C` is copied back for the commitment.

use crate::matrix::Challenge;
use crate::solve::{SolveError, Solver};
use cudarc::cublas::{CudaBlas, result as blas, sys as blas_sys};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, LaunchConfig,
    PushKernelArg,
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The CUDA C source of the input generator (public so that a test can compile it as plain C
/// on a machine without a GPU and compare its bytes with the CPU's stream).
#[doc(hidden)]
pub const KERNEL_SOURCE: &str = r#"
#define ROTL(x, n) (((x) << (n)) | ((x) >> (32 - (n))))
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
"#;

/// Why CUDA cannot be used here, in words an operator can act on; `None` when it can.
pub fn cuda_unavailable() -> Option<String> {
    // SAFETY: each call only tries to dlopen the library's candidate names and drops the
    // handle; no symbol is resolved or called.
    #[allow(unsafe_code)]
    let (driver, nvrtc, cublas) = unsafe {
        (
            cudarc::driver::sys::is_culib_present(),
            cudarc::nvrtc::sys::is_culib_present(),
            cudarc::cublas::sys::is_culib_present(),
        )
    };
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

/// Solves challenges on one NVIDIA GPU.
pub struct CudaSolver {
    name: String,
    stream: Arc<CudaStream>,
    generate: CudaFunction,
    // cuBLAS handles are not safe to use from two threads at once.
    blas: Mutex<CudaBlas>,
}

fn device_err(what: &str) -> impl Fn(&dyn std::fmt::Display) -> SolveError + '_ {
    move |e| SolveError::Device(format!("{what}: {e}"))
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
        let ptx = cudarc::nvrtc::compile_ptx(KERNEL_SOURCE)
            .map_err(|e| device_err("compiling the input kernel")(&format!("{e:?}")))?;
        let module = ctx
            .load_module(ptx)
            .map_err(|e| device_err("loading the input kernel")(&e))?;
        let generate = module
            .load_function("cairn_generate")
            .map_err(|e| device_err("loading the input kernel")(&e))?;
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(stream.clone()).map_err(|e| device_err("creating cuBLAS")(&e))?;
        Ok(Self {
            name: format!("CUDA ({gpu}, cuBLAS int8)"),
            stream,
            generate,
            blas: Mutex::new(blas),
        })
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
        let blocks = u64::from(n) * u64::from(n) / 64;
        let threads = 256u64;
        let cfg = LaunchConfig {
            grid_dim: (blocks.div_ceil(threads) as u32, 1, 1),
            block_dim: (threads as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut launch = self.stream.launch_builder(&self.generate);
        launch.arg(out).arg(&n);
        for w in &k {
            launch.arg(w);
        }
        launch.arg(&mul).arg(&add).arg(&flag);
        // SAFETY: the kernel's signature is (u32*, u32, u32 × 8, u64, u64, i32), matching the
        // arguments pushed above in order; it writes n²/64 blocks of 64 bytes, exactly `out`
        // (allocated n² bytes by the caller, n a multiple of 64), and reads nothing else.
        #[allow(unsafe_code)]
        unsafe { launch.launch(cfg) }.map_err(|e| device_err("generating inputs")(&e))?;
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

    fn buffers(&self, n: u32) -> Result<Buffers, SolveError> {
        if n < 64 || !n.is_multiple_of(64) {
            return Err(SolveError::Device(format!(
                "the CUDA solver needs n a multiple of 64, got {n}"
            )));
        }
        let nn = n as usize * n as usize;
        let alloc = device_err("allocating GPU memory");
        Ok(Buffers {
            a: self.stream.alloc_zeros::<i8>(nn).map_err(|e| alloc(&e))?,
            bt: self.stream.alloc_zeros::<i8>(nn).map_err(|e| alloc(&e))?,
            c: self.stream.alloc_zeros::<i32>(nn).map_err(|e| alloc(&e))?,
        })
    }

    /// The GEMM alone, `reps` times at dimension `n` on resident inputs: the device's int8
    /// rate in ops/s (a multiply-add counts two), to compare with its class's peak.
    pub fn gemm_rate(&self, n: u32, reps: u32) -> Result<(f64, Duration), SolveError> {
        let mut buf = self.buffers(n)?;
        let c = Challenge::new([0x5a; 32], n).map_err(|e| SolveError::Device(e.to_string()))?;
        let (ka, kb, mul, add) = c.derivation();
        self.generate(&mut buf.a, n, &ka, Some((mul, add)))?;
        self.generate(&mut buf.bt, n, &kb, None)?;
        // Warm up: cuBLAS picks and loads its kernel on the first call.
        self.gemm(&buf.a, &buf.bt, &mut buf.c, n)?;
        self.sync()?;
        let start = Instant::now();
        for _ in 0..reps.max(1) {
            self.gemm(&buf.a, &buf.bt, &mut buf.c, n)?;
        }
        self.sync()?;
        let took = start.elapsed();
        let ops = 2.0 * f64::from(n).powi(3) * f64::from(reps.max(1));
        Ok((ops / took.as_secs_f64().max(1e-9), took))
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
    c: CudaSlice<i32>,
}

impl Solver for CudaSolver {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn solve(&self, challenge: &Challenge) -> Result<Vec<i32>, SolveError> {
        let n = challenge.n;
        let mut buf = self.buffers(n)?;
        let (ka, kb, mul, add) = challenge.derivation();
        self.generate(&mut buf.a, n, &ka, Some((mul, add)))?;
        self.generate(&mut buf.bt, n, &kb, None)?;
        self.gemm(&buf.a, &buf.bt, &mut buf.c, n)?;
        self.stream
            .clone_dtoh(&buf.c)
            .map_err(|e| device_err("copying the result back")(&e))
    }
}
