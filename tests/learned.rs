//! Learned absolute embeddings on every backend, including positions past the table.

mod common;

use common::{assert_bits_equal, backends, random_vec};
use posenc::learned::{self, LearnedTable};
use posenc::{Error, GpuPositions, Positions, StatusBuffer, TensorView};
use wgpu::util::DeviceExt;

#[test]
fn learned_gpt2_table_matches_cpu_exactly() {
    // GPT-2: 1024 positions, 768 features. One f32 addition per element is exact on both.
    let shape = LearnedTable::new(1024, 768);
    let table = random_vec(1, 1024 * 768);
    let (batch, seq_len) = (2, 50);
    let embeddings = random_vec(2, batch * seq_len * 768);
    let ids: Vec<u32> = (0..(batch * seq_len) as u32)
        .map(|i| (i * 37) % 1024)
        .collect();
    let mut results = Vec::new();
    for backend in backends() {
        for positions in [Positions::Start(974), Positions::Ids(&ids)] {
            results.push(
                backend
                    .learned_add(&shape, &table, positions, batch, seq_len, &embeddings)
                    .expect("learned add"),
            );
        }
    }
    // The same row sum on every backend, bit for bit.
    for pair in results.chunks(2).skip(1) {
        assert_bits_equal("start", &pair[0], &results[0]);
        assert_bits_equal("ids", &pair[1], &results[1]);
    }
    let row = 974 + 49;
    let want: Vec<f32> = embeddings[49 * 768..50 * 768]
        .iter()
        .zip(&table[row * 768..(row + 1) * 768])
        .map(|(a, b)| a + b)
        .collect();
    assert_bits_equal("row 49", &results[0][49 * 768..50 * 768], &want);
}

#[test]
fn learned_position_past_table_is_error() {
    let shape = LearnedTable::new(8, 2);
    let table = random_vec(3, 16);
    for backend in backends() {
        let error = backend
            .learned_add(&shape, &table, Positions::Ids(&[1, 8]), 1, 2, &[0.0; 4])
            .expect_err("position 8 is past 8 rows");
        assert!(
            matches!(
                error,
                Error::PositionOutOfRange {
                    position: 8,
                    index: 1,
                    limit: 8
                }
            ),
            "{}: {error}",
            backend.name()
        );
        let error = backend
            .learned_add(&shape, &table, Positions::Start(7), 1, 2, &[0.0; 4])
            .expect_err("position 8 from start 7");
        assert!(
            matches!(error, Error::PositionOutOfRange { position: 8, .. }),
            "{}: {error}",
            backend.name()
        );
    }
}

#[test]
fn learned_gpu_buffer_positions_past_table_are_counted() {
    let Some(ctx) = common::gpu() else { return };
    let device = ctx.device();
    let shape = LearnedTable::new(4, 3);
    let table = random_vec(4, 12);
    let storage = |label, data: &[u8]| {
        device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: data,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        })
    };
    let table_buffer = storage("table", bytemuck::cast_slice(&table));
    // Three tokens; the middle one is past the table and must be left as it was.
    let ids_buffer = storage("ids", bytemuck::cast_slice(&[99u32, 2, 4, 0]));
    let target = storage("target", bytemuck::cast_slice(&[1.0f32; 9]));
    let status = StatusBuffer::new(ctx);
    let mut encoder = device.create_command_encoder(&Default::default());
    let positions = GpuPositions::Buffer {
        ids: TensorView::at(&ids_buffer, 1),
        per_sequence: false,
    };
    learned::gpu::record(
        ctx,
        &mut encoder,
        &shape,
        TensorView::new(&table_buffer),
        positions,
        1,
        3,
        TensorView::new(&target),
        &status,
    )
    .expect("record");
    ctx.queue().submit([encoder.finish()]);
    assert_eq!(status.read(ctx).expect("status"), 1);
    let got = ctx.read_f32(&target, 9).expect("readback");
    let want = [
        1.0 + table[6],
        1.0 + table[7],
        1.0 + table[8],
        1.0,
        1.0,
        1.0,
        1.0 + table[0],
        1.0 + table[1],
        1.0 + table[2],
    ];
    assert_bits_equal("rows", &got, &want);
}
