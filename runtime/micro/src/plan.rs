//! The activation arena's layout, planned before anything runs: each tensor
//! lives from the op that writes it to the last op that reads it, and tensors
//! whose lives overlap get disjoint regions. Placed largest first, each at the
//! lowest offset free for its whole life (TensorFlow Lite Micro's greedy
//! planner does the same); the arena is usually the largest live set.

use alloc::vec::Vec;

/// A tensor to place: `len` elements, live from op `first` to op `last`, both included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    pub len: u32,
    pub first: u32,
    pub last: u32,
}

impl Lifetime {
    fn overlaps(&self, other: &Lifetime) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Per tensor, its offset (elements) in the arena.
    pub offsets: Vec<u32>,
    /// Elements of the arena.
    pub arena: u32,
    /// The largest sum of tensors alive at one op: no plan can do with less.
    pub peak_live: u32,
}

pub fn plan(tensors: &[Lifetime]) -> Plan {
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by_key(|&i| (core::cmp::Reverse(tensors[i].len), tensors[i].first));
    let mut offsets = alloc::vec![0u32; tensors.len()];
    let mut placed: Vec<usize> = Vec::new();
    let mut arena = 0u32;
    for i in order {
        let t = tensors[i];
        let mut busy: Vec<(u32, u32)> = placed
            .iter()
            .filter(|&&j| tensors[j].overlaps(&t))
            .map(|&j| (offsets[j], offsets[j] + tensors[j].len))
            .collect();
        busy.sort_unstable();
        let mut at = 0u32;
        for (start, end) in busy {
            if at + t.len <= start {
                break;
            }
            at = at.max(end);
        }
        offsets[i] = at;
        arena = arena.max(at + t.len);
        placed.push(i);
    }
    let last_op = tensors.iter().map(|t| t.last).max().unwrap_or(0);
    let peak_live = (0..=last_op)
        .map(|op| tensors.iter().filter(|t| t.first <= op && op <= t.last).map(|t| t.len).sum::<u32>())
        .max()
        .unwrap_or(0);
    Plan { offsets, arena, peak_live }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_reuses_the_dead_tensors_room() {
        // x(0..0) -> a(0..1) -> b(1..2) -> y(2..3): never more than two alive.
        let t = |len, first, last| Lifetime { len, first, last };
        let p = plan(&[t(64, 0, 0), t(128, 0, 1), t(64, 1, 2), t(10, 2, 3)]);
        assert_eq!(p.peak_live, 192);
        assert_eq!(p.arena, 192);
        // a and b overlap in time: disjoint regions.
        let (a, b) = (p.offsets[1], p.offsets[2]);
        assert!(a + 128 <= b || b + 64 <= a);
    }
}
