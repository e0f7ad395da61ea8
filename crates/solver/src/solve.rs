//! Solvers: compute a challenge table `C = P·A·B` (int8 inputs, int32 accumulation).
//!
//! The CPU solver generates `A` (rows already in shuffled order) and `B`'s columns once, then
//! splits the output rows over every core (rayon). Each core computes blocks of 2 rows × 4
//! columns at a time (8 dot products sharing their loads), over the full depth: one row of
//! `A` and four columns of `B` are `6·n` bytes, in L1 for every `n` this crate allows. The
//! kernel is plain Rust that LLVM vectorizes; on x86-64 it is compiled a second time with AVX2
//! enabled and chosen at run time when the CPU has it.

use crate::prover::{HostTables, Retained, Table};
use cairn_popw::{Challenge, Params};
use rayon::prelude::*;
use std::time::{Duration, Instant};

/// A challenge's inputs, laid out for the product: row `r` of `a` is row `π(r)` of `A`; row `j`
/// of `bt` is column `j` of `B`. Both `n × n`, row-major.
pub struct Inputs {
    /// The dimension.
    pub n: usize,
    /// Shuffled `A`.
    pub a: Vec<i8>,
    /// `B` transposed.
    pub bt: Vec<i8>,
}

impl Inputs {
    /// Generates `challenge`'s whole input (what a solver starts from).
    pub fn of(challenge: &Challenge) -> Self {
        let n = challenge.n as usize;
        let a_plain = challenge.a_matrix();
        let mut a = vec![0i8; n * n];
        a.par_chunks_mut(n).enumerate().for_each(|(r, row)| {
            let src = challenge.shuffled_row(r as u32) as usize * n;
            row.copy_from_slice(&a_plain[src..src + n]);
        });
        Self {
            n,
            a,
            bt: challenge.b_matrix_t(),
        }
    }
}

/// Computes challenge tables.
pub trait Solver: Send + Sync {
    /// What it runs on, for reports (e.g. "CPU (2 threads, AVX2)").
    fn name(&self) -> String;
    /// The result `C` of `challenge`, row-major, `n × n`, in host memory.
    fn solve(&self, challenge: &Challenge) -> Result<Vec<i32>, SolveError>;

    /// Gets ready for a challenge of `params` before its nonce arrives (a GPU solver allocates
    /// the tables), so that the timed phase only computes. Optional: `compute` does what was
    /// not done here.
    fn prepare(&self, params: &Params) -> Result<(), SolveError> {
        let _ = params;
        Ok(())
    }

    /// Computes and commits one table per challenge, keeping the tables for the memory phase
    /// and the audit; `progress(done, total)` after each. The default solves each into host
    /// memory and hashes its rows there; a GPU solver keeps them in GPU memory.
    fn compute(
        &self,
        challenges: Vec<Challenge>,
        progress: &mut dyn FnMut(u32, u32),
    ) -> Result<(Vec<Table>, Box<dyn Retained>), SolveError> {
        let total = challenges.len() as u32;
        let n = challenges.first().map_or(0, |c| c.n);
        let mut tables = Vec::with_capacity(challenges.len());
        let mut values = Vec::with_capacity(challenges.len());
        for (k, c) in challenges.into_iter().enumerate() {
            let v = self.solve(&c)?;
            tables.push(Table::commit(c, &v));
            values.push(v);
            progress(k as u32 + 1, total);
        }
        Ok((tables, Box::new(HostTables::new(n, values)?)))
    }
}

/// Why a solver failed.
#[derive(Debug, thiserror::Error)]
pub enum SolveError {
    /// The device could not be used.
    #[error("{0}")]
    Device(String),
    /// A row asked for is not in the tables.
    #[error("there is no row {row} of table {table}")]
    NoSuchRow {
        /// The table.
        table: u32,
        /// The row.
        row: u32,
    },
}

/// The CPU solver (every core, through rayon's global pool).
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuSolver;

impl Solver for CpuSolver {
    fn name(&self) -> String {
        format!(
            "CPU ({} threads{})",
            rayon::current_num_threads(),
            if has_avx2() { ", AVX2" } else { "" }
        )
    }

    fn solve(&self, challenge: &Challenge) -> Result<Vec<i32>, SolveError> {
        Ok(product(&Inputs::of(challenge)))
    }
}

/// `C = a · btᵀ` on every core.
pub fn product(inp: &Inputs) -> Vec<i32> {
    let n = inp.n;
    let mut c = vec![0i32; n * n];
    if n < 4 {
        for r in 0..n {
            for j in 0..n {
                c[r * n + j] = (0..n)
                    .map(|k| i32::from(inp.a[r * n + k]) * i32::from(inp.bt[j * n + k]))
                    .sum();
            }
        }
        return c;
    }
    c.par_chunks_mut(2 * n).enumerate().for_each(|(blk, out)| {
        let r = blk * 2;
        let a0 = &inp.a[r * n..(r + 1) * n];
        let a1 = &inp.a[(r + 1) * n..(r + 2) * n];
        let (o0, o1) = out.split_at_mut(n);
        for j in (0..n).step_by(4) {
            let b = [
                &inp.bt[j * n..(j + 1) * n],
                &inp.bt[(j + 1) * n..(j + 2) * n],
                &inp.bt[(j + 2) * n..(j + 3) * n],
                &inp.bt[(j + 3) * n..(j + 4) * n],
            ];
            let k = kernel(a0, a1, b);
            o0[j..j + 4].copy_from_slice(&k[0]);
            o1[j..j + 4].copy_from_slice(&k[1]);
        }
    });
    c
}

#[inline(always)]
fn kernel_generic(a0: &[i8], a1: &[i8], b: [&[i8]; 4]) -> [[i32; 4]; 2] {
    let n = a0.len();
    // Eight i32 lanes per dot product, each summing adjacent pairs of products: the shape of
    // x86's `pmaddwd` (and of NEON's widening multiply-adds), which LLVM then emits.
    let mut acc = [[[0i32; 8]; 4]; 2];
    let mut k = 0;
    while k + 16 <= n {
        let x0: &[i8; 16] = a0[k..k + 16].try_into().unwrap_or(&[0; 16]);
        let x1: &[i8; 16] = a1[k..k + 16].try_into().unwrap_or(&[0; 16]);
        for (c, bc) in b.iter().enumerate() {
            let y: &[i8; 16] = bc[k..k + 16].try_into().unwrap_or(&[0; 16]);
            for l in 0..8 {
                let (y0, y1) = (i32::from(y[2 * l]), i32::from(y[2 * l + 1]));
                // Wrapping: cannot overflow (|sum| ≤ n·2¹⁴ < 2³¹), and overflow checks would
                // stop LLVM vectorizing in debug builds.
                let p0 = (i32::from(x0[2 * l]) * y0).wrapping_add(i32::from(x0[2 * l + 1]) * y1);
                let p1 = (i32::from(x1[2 * l]) * y0).wrapping_add(i32::from(x1[2 * l + 1]) * y1);
                acc[0][c][l] = acc[0][c][l].wrapping_add(p0);
                acc[1][c][l] = acc[1][c][l].wrapping_add(p1);
            }
        }
        k += 16;
    }
    let mut out = [[0i32; 4]; 2];
    for r in 0..2 {
        for c in 0..4 {
            out[r][c] = acc[r][c].iter().sum();
        }
    }
    while k < n {
        for (c, bc) in b.iter().enumerate() {
            out[0][c] += i32::from(a0[k]) * i32::from(bc[k]);
            out[1][c] += i32::from(a1[k]) * i32::from(bc[k]);
        }
        k += 1;
    }
    out
}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn kernel_avx2(a0: &[i8], a1: &[i8], b: [&[i8]; 4]) -> [[i32; 4]; 2] {
    kernel_generic(a0, a1, b)
}

#[inline]
fn kernel(a0: &[i8], a1: &[i8], b: [&[i8]; 4]) -> [[i32; 4]; 2] {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU was just checked to support AVX2, the only requirement of
        // `kernel_avx2` (its body is safe Rust).
        #[allow(unsafe_code)]
        return unsafe { kernel_avx2(a0, a1, b) };
    }
    kernel_generic(a0, a1, b)
}

/// The CPU's int8 rate with the solver's own kernel on data that stays in L1 (no memory
/// traffic), on every core, in ops/s (a multiply-add counts two): the ceiling the solver's
/// measured rate is compared with.
pub fn cpu_kernel_peak(duration: Duration) -> f64 {
    let n = 512;
    let a: Vec<i8> = (0..2 * n).map(|i| (i % 251) as i8).collect();
    let b: Vec<i8> = (0..4 * n).map(|i| (i % 241) as i8).collect();
    let threads = rayon::current_num_threads();
    let start = Instant::now();
    let calls: u64 = (0..threads)
        .into_par_iter()
        .map(|_| {
            let mut calls = 0u64;
            let mut sink = 0i32;
            while start.elapsed() < duration {
                for _ in 0..256 {
                    let k = kernel(
                        std::hint::black_box(&a[..n]),
                        &a[n..],
                        [&b[..n], &b[n..2 * n], &b[2 * n..3 * n], &b[3 * n..]],
                    );
                    sink = sink.wrapping_add(k[0][0]);
                }
                calls += 256;
            }
            std::hint::black_box(sink);
            calls
        })
        .sum();
    (calls * 8 * n as u64 * 2) as f64 / start.elapsed().as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_product_equals_the_definition() {
        for n in [2u32, 4, 64, 128] {
            let c = Challenge::new([5; 32], n).unwrap();
            let out = CpuSolver.solve(&c).unwrap();
            for r in 0..n {
                assert_eq!(
                    &out[(r * n) as usize..((r + 1) * n) as usize],
                    c.result_row(r).as_slice(),
                    "n={n} row {r}"
                );
            }
        }
    }
}
