//! candle-nn's CPU RoPE (`rope` for the half layout, `rope_i` for the interleaved one) on
//! the shapes of posenc's RoPE cases, in candle's `[batch, heads, seq, head_dim]` layout.

use candle_core::{Device, Tensor};
use posenc::bench::{self, BenchOptions, Measurement, Timing};

use crate::{
    inputs, inverse_frequencies, PeerError, PeerRow, DECODE_POSITION, HEADS, HEAD_DIM, KV_HEADS,
    PREFILL_TOKENS,
};

const PEER: &str = "candle-nn 0.11.1";

/// A candle RoPE function: `(x, cos, sin) -> rotated x`.
type RopeFn = fn(&Tensor, &Tensor, &Tensor) -> candle_core::Result<Tensor>;

/// Times `rope` and `rope_i` on Q and K of the prefill and decode cases.
pub fn run(options: &BenchOptions) -> Result<Vec<PeerRow>, PeerError> {
    let adapter = format!(
        "cpu (candle-nn, {} threads available to rayon)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let variants: [(&str, RopeFn); 2] = [
        ("", candle_nn::rotary_emb::rope),
        ("_interleaved", candle_nn::rotary_emb::rope_i),
    ];
    let mut rows = Vec::new();
    for (case, seq_len, start) in [
        ("rope_prefill", PREFILL_TOKENS, 0),
        ("rope_decode", 1, DECODE_POSITION),
    ] {
        let device = Device::Cpu;
        let q = Tensor::from_vec(
            inputs(HEADS * seq_len * HEAD_DIM, 1),
            (1, HEADS, seq_len, HEAD_DIM),
            &device,
        )?;
        let k = Tensor::from_vec(
            inputs(KV_HEADS * seq_len * HEAD_DIM, 2),
            (1, KV_HEADS, seq_len, HEAD_DIM),
            &device,
        )?;
        let (cos, sin) = tables(start, seq_len, &device)?;
        // Q and K are read and new tensors of the same size are written.
        let bytes = 2 * 4 * ((HEADS + KV_HEADS) * seq_len * HEAD_DIM) as u64;
        let copy = bench::memcpy_baseline(bytes, options)?;

        for (suffix, rope) in variants {
            let timed = bench::time_wall(options, || -> Result<(), PeerError> {
                let q_out = rope(&q, &cos, &sin)?;
                let k_out = rope(&k, &cos, &sin)?;
                std::hint::black_box((q_out, k_out));
                Ok(())
            })?;
            let shape = format!(
                "q[1,{HEADS},{seq_len},{HEAD_DIM}] k[1,{KV_HEADS},{seq_len},{HEAD_DIM}] bhsd start {start}"
            );
            let mut measurement = Measurement::from_times(
                &format!("{case}{suffix}"),
                "cpu",
                &shape,
                Timing::Wall,
                &adapter,
                &timed.times_ms,
                bytes,
                None,
            );
            measurement.warmup_runs = timed.warmup_runs;
            measurement.compare_with_copy(&copy);
            rows.push(PeerRow {
                peer: PEER.to_owned(),
                measurement,
            });
        }
    }
    Ok(rows)
}

/// cos and sin `[seq_len, head_dim / 2]` for positions `start..start + seq_len`, computed in
/// f64 and rounded to f32.
fn tables(start: usize, seq_len: usize, device: &Device) -> Result<(Tensor, Tensor), PeerError> {
    let frequencies = inverse_frequencies();
    let mut cos = Vec::with_capacity(seq_len * frequencies.len());
    let mut sin = Vec::with_capacity(seq_len * frequencies.len());
    for position in start..start + seq_len {
        for &w in &frequencies {
            let (s, c) = (position as f64 * w).sin_cos();
            cos.push(c as f32);
            sin.push(s as f32);
        }
    }
    let dims = (seq_len, frequencies.len());
    Ok((
        Tensor::from_vec(cos, dims, device)?,
        Tensor::from_vec(sin, dims, device)?,
    ))
}
