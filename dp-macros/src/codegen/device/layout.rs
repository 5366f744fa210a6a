//! The device arena's layout. The plan's buffers and the device's own scratch ([`super::scratch`])
//! are blocks of values per example, each of one storage class ([`Stored`]); in plan order the
//! classes alternate. The device lays out every `F32` block first, in plan order, then every
//! `OfPrecision` block: so a device storing in bf16, which keeps the `OfPrecision` spans in its bf16
//! store, needs f32 memory for the prefix of `F32` blocks only (`DpModel::DEVICE_ARENA_F32_PER_EXAMPLE`).
//! The CPU keeps the plan's order. Every span the device program emits lies inside one block, so it
//! moves with its block, and offsets within a block are kept.

use crate::plan::memory::Stored;
use crate::plan::Plan;

/// A block of the arena, in values per example.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// Where it starts in plan order.
    pub offset: usize,
    pub len: usize,
    pub stored: Stored,
    /// Whether an f32 product may read it (all but a conv's patches, which only the conv's own
    /// products, in the precision, read).
    pub read_in_f32: bool,
}

/// Where each block of a plan lives on a device.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Each non-empty block and its offset on the device.
    blocks: Vec<(Block, usize)>,
    /// Values per example of the `F32` blocks, which come first.
    f32_len: usize,
}

impl Layout {
    /// The layout of `plan`'s buffers and the device's scratch.
    pub fn of(plan: &Plan) -> Self {
        let planned = plan.buffers.iter().map(|b| Block {
            offset: b.offset,
            len: b.len,
            stored: b.stored,
            read_in_f32: true,
        });
        let mut blocks: Vec<Block> =
            planned.chain(super::scratch::blocks(plan)).filter(|b| b.len > 0).collect();
        blocks.sort_by_key(|b| b.offset);
        for pair in blocks.windows(2) {
            assert!(pair[0].offset + pair[0].len <= pair[1].offset, "arena blocks overlap: {pair:?}");
        }
        let mut placed = Vec::with_capacity(blocks.len());
        let mut at = 0;
        for class in [Stored::F32, Stored::OfPrecision] {
            for b in blocks.iter().filter(|b| b.stored == class) {
                placed.push((*b, at));
                at += b.len;
            }
        }
        let f32_len = blocks.iter().filter(|b| b.stored == Stored::F32).map(|b| b.len).sum();
        assert!(at <= super::scratch::arena_len(plan), "the blocks hold more than the arena");
        Layout { blocks: placed, f32_len }
    }

    /// The device offset of the span of `len` values at `offset` in plan order, which lies inside one
    /// block (an empty span may also sit at a block's end; one outside every block moves to 0).
    pub fn offset(&self, offset: usize, len: usize) -> usize {
        let inside = |b: &Block| b.offset <= offset && offset + len <= b.offset + b.len;
        match self.blocks.iter().find(|(b, _)| inside(b)) {
            Some((b, at)) => at + (offset - b.offset),
            None if len == 0 => 0,
            None => panic!(
                "a device span of {len} values at {offset} crosses the arena's blocks {:?}",
                self.blocks
            ),
        }
    }

    /// Values per example of the `F32` blocks, which the device lays out first.
    pub fn f32_len(&self) -> usize {
        self.f32_len
    }

    /// Values per example of the largest `OfPrecision` block an f32 product may read: every span lies
    /// in one block, so a slot of this many values per example holds any operand of an f32 product
    /// stored in the precision, converted to f32.
    pub fn largest_read_in_f32(&self) -> usize {
        let read = |b: &&(Block, usize)| b.0.stored == Stored::OfPrecision && b.0.read_in_f32;
        self.blocks.iter().filter(read).map(|(b, _)| b.len).max().unwrap_or(0)
    }

    /// Values per example of every block.
    pub fn len(&self) -> usize {
        self.blocks.iter().map(|(b, _)| b.len).sum()
    }
}
