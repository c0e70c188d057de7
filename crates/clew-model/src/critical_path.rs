//! Critical path of one trace, as Jaeger UI computes it (the algorithm Uber contributed; see
//! CRISP): children are first clipped to their parent's window, children wholly outside their
//! parent are dropped with all their descendants, then the path walks back from the end of the
//! root, always into the child that finished last before the point reached so far.

use std::collections::HashMap;

/// One stretch of time during which `span_index` was on the critical path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CriticalSegment {
    pub span_index: usize,
    pub start: u64,
    pub end: u64,
}

/// The input the algorithm needs for one span.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Interval {
    pub start: u64,
    pub end: u64,
}

/// Computes the critical path starting at `root` over a parent → children adjacency
/// (`children[i]` are the indices of span `i`'s children). Returns the segments from the end
/// of the trace backwards; their union covers the root's window.
pub(crate) fn critical_path_over(root: usize, windows: &[Interval], children: &[Vec<usize>]) -> Vec<CriticalSegment> {
    // Clip every span to its parent, top-down, dropping spans wholly outside their parent.
    let mut clipped: Vec<Option<Interval>> = vec![None; windows.len()];
    let mut parent_of: Vec<Option<usize>> = vec![None; windows.len()];
    clipped[root] = Some(windows[root]);
    let mut stack = vec![root];
    let mut kept_children: Vec<Vec<usize>> = vec![Vec::new(); windows.len()];
    while let Some(index) = stack.pop() {
        let parent = clipped[index].expect("only clipped spans are pushed");
        for &child in &children[index] {
            let window = windows[child];
            if window.start > parent.end || window.end < parent.start {
                continue; // wholly outside: dropped with its descendants
            }
            clipped[child] = Some(Interval { start: window.start.max(parent.start), end: window.end.min(parent.end) });
            parent_of[child] = Some(index);
            kept_children[index].push(child);
            stack.push(child);
        }
    }
    // Children ordered by end time, latest first; ties keep the later-listed child first.
    for list in kept_children.iter_mut() {
        list.sort_by_key(|&child| std::cmp::Reverse(clipped[child].map(|w| w.end).unwrap_or(0)));
    }

    let mut segments = Vec::new();
    let mut current = root;
    let mut spawn_time: Option<u64> = None;
    // When climbing back from a child, only siblings after it in the end-time order are
    // candidates: each child is walked at most once, so the walk ends.
    let mut resume_from = 0usize;
    loop {
        let window = clipped[current].expect("walk stays on clipped spans");
        let section_end = spawn_time.unwrap_or(window.end);
        let candidates = &kept_children[current];
        let last_finishing = candidates.iter().enumerate().skip(resume_from).find(|&(_, &child)| {
            let child_end = clipped[child].expect("kept").end;
            match spawn_time {
                None => true,
                // Jaeger and CRISP use `<`; a child that ends exactly when the next one starts
                // (sequential calls with no gap) also happened before it, so `<=` here.
                Some(spawn) => child_end <= spawn,
            }
        });
        match last_finishing {
            Some((_, &child)) => {
                let child_end = clipped[child].expect("kept").end;
                if child_end != section_end {
                    segments.push(CriticalSegment { span_index: current, start: child_end, end: section_end });
                }
                current = child;
                spawn_time = None;
                resume_from = 0;
            }
            None => {
                if window.start != section_end {
                    segments.push(CriticalSegment { span_index: current, start: window.start, end: section_end });
                }
                match parent_of[current] {
                    Some(parent) => {
                        resume_from = kept_children[parent].iter().position(|&c| c == current).expect("child of its parent") + 1;
                        spawn_time = Some(window.start);
                        current = parent;
                    }
                    None => break,
                }
            }
        }
    }
    segments
}

/// Critical path of a trace given as `(span_id, parent_id, start, end)` tuples; a convenience
/// for callers outside assembly. Returns per-span critical time in input order.
pub fn critical_path<K: std::hash::Hash + Eq + Copy>(spans: &[(K, Option<K>, u64, u64)], root: usize) -> Vec<u64> {
    let index: HashMap<K, usize> = spans.iter().enumerate().map(|(i, s)| (s.0, i)).collect();
    let mut children = vec![Vec::new(); spans.len()];
    for (i, span) in spans.iter().enumerate() {
        if let Some(parent) = span.1.and_then(|p| index.get(&p)) {
            if *parent != i {
                children[*parent].push(i);
            }
        }
    }
    let windows: Vec<Interval> = spans.iter().map(|s| Interval { start: s.2, end: s.3.max(s.2) }).collect();
    let mut per_span = vec![0u64; spans.len()];
    for segment in critical_path_over(root, &windows, &children) {
        per_span[segment.span_index] += segment.end - segment.start;
    }
    per_span
}

#[cfg(test)]
mod tests {
    use super::critical_path;

    // Spans: (id, parent, start, end). Expected values are worked out by hand in the comments.

    #[test]
    fn sequential_children() {
        // root 0..100; a 10..40; b 50..90. Path: root 90..100, b 50..90, root 40..50, a 10..40, root 0..10.
        let spans = [(1, None, 0, 100), (2, Some(1), 10, 40), (3, Some(1), 50, 90)];
        assert_eq!(critical_path(&spans, 0), vec![30, 30, 40]);
    }

    #[test]
    fn parallel_children_only_the_longer_counts() {
        // root 0..100; a 10..80; b 20..60 (inside a's lifetime, ends before a). b ends at 60,
        // not before a's start 10, so after a the walk returns to root: root 80..100, a 10..80, root 0..10.
        let spans = [(1, None, 0, 100), (2, Some(1), 10, 80), (3, Some(1), 20, 60)];
        assert_eq!(critical_path(&spans, 0), vec![30, 70, 0]);
    }

    #[test]
    fn overlapping_siblings_chain_through_earlier_finisher() {
        // root 0..100; a 5..30; b 25..60; c 55..95. c is last; b ends 60 (not < 55) so skipped;
        // a ends 30 < 55: root 95..100, c 55..95, root 30..55, a 5..30, root 0..5.
        let spans = [(1, None, 0, 100), (2, Some(1), 5, 30), (3, Some(1), 25, 60), (4, Some(1), 55, 95)];
        assert_eq!(critical_path(&spans, 0), vec![5 + 25 + 5, 25, 0, 40]);
    }

    #[test]
    fn children_overflowing_parent_are_clipped_and_outside_ones_dropped() {
        // root 0..100; a 80..150 clipped to 80..100; g (child of a) 90..140 clipped to 90..100;
        // z 200..300 outside root: dropped with its child. Path: g 90..100, a 80..90, root 0..80.
        let spans = [(1, None, 0, 100), (2, Some(1), 80, 150), (3, Some(2), 90, 140), (4, Some(1), 200, 300), (5, Some(4), 210, 220)];
        assert_eq!(critical_path(&spans, 0), vec![80, 10, 10, 0, 0]);
    }

    #[test]
    fn nested_grandchildren() {
        // root 0..100; a 10..90; a1 20..50; a2 60..80. Path: root 90..100, a 80..90, a2 60..80,
        // a 50..60, a1 20..50, a 10..20, root 0..10.
        let spans = [(1, None, 0, 100), (2, Some(1), 10, 90), (3, Some(2), 20, 50), (4, Some(2), 60, 80)];
        assert_eq!(critical_path(&spans, 0), vec![20, 30, 30, 20]);
    }

    #[test]
    fn async_child_after_parent_end_is_off_the_path() {
        // A producer-style child that starts after its parent ended is wholly outside: dropped.
        let spans = [(1, None, 0, 50), (2, Some(1), 60, 90)];
        assert_eq!(critical_path(&spans, 0), vec![50, 0]);
    }

    #[test]
    fn back_to_back_children_are_all_on_the_path() {
        // root 0..100; a 10..40; b 40..70; c 70..90: each ends exactly when the next starts.
        let spans = [(1, None, 0, 100), (2, Some(1), 10, 40), (3, Some(1), 40, 70), (4, Some(1), 70, 90)];
        assert_eq!(critical_path(&spans, 0), vec![20, 30, 30, 20]);
    }

    #[test]
    fn zero_length_children_do_not_loop() {
        let spans = [(1, None, 0, 100), (2, Some(1), 50, 50), (3, Some(1), 50, 50), (4, Some(1), 10, 50)];
        let per_span = critical_path(&spans, 0);
        assert_eq!(per_span.iter().sum::<u64>(), 100);
        assert_eq!(per_span[3], 40);
    }

    #[test]
    fn total_equals_root_duration() {
        let spans = [
            (1, None, 0, 1000),
            (2, Some(1), 100, 400),
            (3, Some(1), 150, 700),
            (4, Some(3), 160, 650),
            (5, Some(1), 690, 900),
            (6, Some(5), 700, 950),
        ];
        let per_span = critical_path(&spans, 0);
        assert_eq!(per_span.iter().sum::<u64>(), 1000);
    }
}
