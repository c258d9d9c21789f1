//! Where [`skillgen_kernels::dense::matmul_wt`] beats candle's general product (`gemm`): times
//! both on the linear-layer shapes of all-MiniLM-L6-v2 (hidden 384, FFN 1536) for 1–48 rows,
//! alternating, medians of 5 rounds; [`FEW_ROWS`] is set from this.
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo run --release -p skillgen-kernels --example dense_rows
//! ```

use std::time::Instant;

use candle_core::{Device, Tensor};
use skillgen_kernels::Isa;
use skillgen_kernels::dense::{FEW_ROWS, matmul_wt};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> candle_core::Result<()> {
    let isa = Isa::detect();
    println!(
        "FEW_ROWS = {FEW_ROWS:?}; threads = {}",
        rayon::current_num_threads()
    );
    println!(
        "{:>4} {:>5} {:>5}  {:>10} {:>10}  ours/gemm",
        "m", "k", "n", "gemm µs", "ours µs"
    );
    for m in [1usize, 2, 4, 8, 12, 16, 20, 24, 32, 48] {
        let (mut tg, mut to) = (0.0, 0.0);
        for (k, n) in [(384usize, 1152usize), (384, 384), (384, 1536), (1536, 384)] {
            let x = Tensor::randn(0f32, 1., (m, k), &Device::Cpu)?;
            let w = Tensor::randn(0f32, 1., (n, k), &Device::Cpu)?;
            let (xv, wv) = (
                x.flatten_all()?.to_vec1::<f32>()?,
                w.flatten_all()?.to_vec1::<f32>()?,
            );
            let iters = 200;
            let (mut g, mut o) = (Vec::new(), Vec::new());
            for _ in 0..5 {
                let t = Instant::now();
                for _ in 0..iters {
                    std::hint::black_box(x.matmul(&w.t()?)?);
                }
                g.push(t.elapsed().as_secs_f64() / iters as f64);
                let t = Instant::now();
                for _ in 0..iters {
                    std::hint::black_box(matmul_wt(isa, &xv, k, &wv));
                }
                o.push(t.elapsed().as_secs_f64() / iters as f64);
            }
            let (g, o) = (median(g), median(o));
            println!(
                "{m:>4} {k:>5} {n:>5}  {:>10.1} {:>10.1}  {:.2}",
                g * 1e6,
                o * 1e6,
                o / g
            );
            tg += g;
            to += o;
        }
        println!(
            "{m:>4} one layer  {:>10.1} {:>10.1}  {:.2}",
            tg * 1e6,
            to * 1e6,
            to / tg
        );
    }
    Ok(())
}
