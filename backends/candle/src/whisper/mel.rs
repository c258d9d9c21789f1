//! Whisper log-mel features, as transformers' `WhisperFeatureExtractor` computes them.
//!
//! candle's `whisper::audio::pcm_to_mel` follows whisper.cpp (no centred STFT, different
//! padding) and needs the filterbank from a bytes file; here both are computed:
//! - [`mel_filters`]: the slaney-scale, slaney-normalised triangular filterbank of
//!   `transformers.audio_utils.mel_filter_bank` (librosa's default `mel`);
//! - [`log_mel`]: zero-pad/trim to the chunk, centred STFT (reflect padding, periodic Hann,
//!   `n_fft` 400, hop 160), power spectrum, mel, `log10(max(·, 1e-10))`, drop the last frame,
//!   clamp at max − 8, `(x + 4) / 4`.

/// FFT size.
pub const N_FFT: usize = 400;
/// Hop length.
pub const HOP: usize = 160;
/// Sample rate.
pub const SAMPLE_RATE: usize = 16_000;

const MIN_LOG_HZ: f64 = 1000.0;
const MIN_LOG_MEL: f64 = 15.0;

fn logstep() -> f64 {
    27.0 / 6.4f64.ln()
}

fn hz_to_mel(f: f64) -> f64 {
    if f >= MIN_LOG_HZ {
        MIN_LOG_MEL + (f / MIN_LOG_HZ).ln() * logstep()
    } else {
        3.0 * f / 200.0
    }
}

fn mel_to_hz(m: f64) -> f64 {
    if m >= MIN_LOG_MEL {
        MIN_LOG_HZ * ((m - MIN_LOG_MEL) / logstep()).exp()
    } else {
        200.0 * m / 3.0
    }
}

fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    if n < 2 {
        return vec![a; n];
    }
    (0..n)
        .map(|i| a + (b - a) * i as f64 / (n - 1) as f64)
        .collect()
}

/// The `[n_mels, n_fft / 2 + 1]` filterbank (row-major) for 0 Hz – `SAMPLE_RATE / 2`.
pub fn mel_filters(n_mels: usize) -> Vec<f32> {
    let n_freqs = N_FFT / 2 + 1;
    let fft_freqs = linspace(0.0, SAMPLE_RATE as f64 / 2.0, n_freqs);
    let mels = linspace(
        hz_to_mel(0.0),
        hz_to_mel(SAMPLE_RATE as f64 / 2.0),
        n_mels + 2,
    );
    let pts: Vec<f64> = mels.into_iter().map(mel_to_hz).collect();
    let mut out = vec![0f32; n_mels * n_freqs];
    for m in 0..n_mels {
        let (lo, c, hi) = (pts[m], pts[m + 1], pts[m + 2]);
        let enorm = 2.0 / (hi - lo);
        for (k, &f) in fft_freqs.iter().enumerate() {
            let down = (f - lo) / (c - lo);
            let up = (hi - f) / (hi - c);
            let v = down.min(up).max(0.0) * enorm;
            out[m * n_freqs + k] = v as f32;
        }
    }
    out
}

/// Log-mel features `[n_mels, n_samples / HOP]` (row-major) of `pcm`, zero-padded or trimmed to
/// `n_samples` (30 s × 16 kHz for real Whisper models: 2 × `max_source_positions` frames).
pub fn log_mel(pcm: &[f32], filters: &[f32], n_mels: usize, n_samples: usize) -> Vec<f32> {
    let n_freqs = N_FFT / 2 + 1;
    let mut x: Vec<f64> = pcm.iter().take(n_samples).map(|&s| f64::from(s)).collect();
    x.resize(n_samples, 0.0);
    // Centre: reflect-pad N_FFT / 2 on both sides.
    let half = N_FFT / 2;
    let n = x.len();
    let reflect = |i: isize| -> f64 {
        let n = n as isize;
        if n == 1 {
            return x[0];
        }
        let period = 2 * (n - 1);
        let mut j = i.rem_euclid(period);
        if j >= n {
            j = period - j;
        }
        x[j as usize]
    };
    let padded: Vec<f64> = (0..n + 2 * half)
        .map(|i| reflect(i as isize - half as isize))
        .collect();
    let frames = 1 + n / HOP;
    let window: Vec<f64> = (0..N_FFT)
        .map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / N_FFT as f64).cos())
        .collect();
    let (cos, sin): (Vec<f64>, Vec<f64>) = (0..N_FFT)
        .map(|i| {
            let a = 2.0 * std::f64::consts::PI * i as f64 / N_FFT as f64;
            (a.cos(), a.sin())
        })
        .unzip();
    // log10 of the mel energies, [n_mels, frames - 1] (the last frame is dropped).
    let kept = frames - 1;
    let mut out = vec![0f64; n_mels * kept];
    let mut power = vec![0f64; n_freqs];
    let mut buf = vec![0f64; N_FFT];
    for t in 0..kept {
        let frame = &padded[t * HOP..t * HOP + N_FFT];
        let silent = frame.iter().all(|&v| v == 0.0);
        if silent {
            power.iter_mut().for_each(|p| *p = 0.0);
        } else {
            for (b, (&s, &w)) in buf.iter_mut().zip(frame.iter().zip(&window)) {
                *b = s * w;
            }
            for (k, p) in power.iter_mut().enumerate() {
                let (mut re, mut im) = (0.0, 0.0);
                for (i, &v) in buf.iter().enumerate() {
                    let idx = (k * i) % N_FFT;
                    re += v * cos[idx];
                    im -= v * sin[idx];
                }
                *p = re * re + im * im;
            }
        }
        for m in 0..n_mels {
            let row = &filters[m * n_freqs..(m + 1) * n_freqs];
            let e: f64 = row
                .iter()
                .zip(&power)
                .map(|(&f, &p)| f64::from(f) * p)
                .sum();
            out[m * kept + t] = e.max(1e-10).log10();
        }
    }
    let max = out.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    out.into_iter()
        .map(|v| ((v.max(max - 8.0) + 4.0) / 4.0) as f32)
        .collect()
}
