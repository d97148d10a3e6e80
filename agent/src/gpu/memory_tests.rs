use super::*;

const GIB: u64 = 1 << 30;

fn budget(total_gib: u64, reserve_gib: u64, others_gib: u64) -> Budget {
    Budget {
        total: total_gib * GIB,
        reserve: reserve_gib * GIB,
        others: others_gib * GIB,
    }
}

fn need(weights_gib: u64, kv_gib: Option<u64>) -> Need {
    Need {
        weights: weights_gib * GIB,
        kv: kv_gib.map(|g| g * GIB),
        min_kv: GIB,
    }
}

#[test]
fn the_budget_is_total_less_reserve_less_other_processes() {
    assert_eq!(budget(80, 8, 10).usable(), 62 * GIB);
    assert_eq!(budget(8, 8, 10).usable(), 0);
}

#[test]
fn weights_go_to_the_smallest_budget_that_holds_them() {
    // Free: 70, 30, 20 GiB. A 25 GiB model fits the 30 best; a 10 GiB one, the 20.
    let mut pool = MemoryPool::new(
        &[budget(80, 10, 0), budget(40, 10, 0), budget(24, 4, 0)],
        GIB,
    );
    let all = |_| true;
    assert_eq!(
        pool.place(1, need(25, Some(2)), all).map(|p| p.device),
        Ok(1)
    );
    assert_eq!(
        pool.place(2, need(10, Some(2)), all).map(|p| p.device),
        Ok(2)
    );
    // Only what is eligible (healthy) counts.
    let placed = pool.place(3, need(10, Some(2)), |d| d != 2);
    assert_eq!(placed.map(|p| p.device), Ok(0));
    let too_big = pool.place(4, need(75, None), all);
    assert_eq!(too_big, Err(PlacementError::NoRoom { needed: 76 * GIB }));
}

#[test]
fn the_kv_pool_takes_what_it_asks_or_all_that_is_left() {
    let mut pool = MemoryPool::new(&[budget(16, 0, 0), budget(16, 0, 0)], GIB);
    let asked = pool.place(1, need(4, Some(3)), |d| d == 0);
    assert_eq!(asked.map(|p| p.kv_bytes), Ok(3 * GIB));
    let rest = pool.place(2, need(4, None), |d| d == 1);
    assert_eq!(rest.map(|p| p.kv_bytes), Ok(12 * GIB));
    let m = pool.memory(1);
    assert_eq!((m.weights, m.kv, m.free), (4 * GIB, 12 * GIB, 0));
    assert_eq!(pool.memory(0).free, 9 * GIB);
}

#[test]
fn released_replicas_leave_holes_that_count_as_fragmentation() {
    let mut pool = MemoryPool::new(&[budget(10, 0, 0)], GIB);
    let all = |_| true;
    for replica in 1..=3 {
        pool.place(replica, need(2, Some(1)), all).unwrap();
    }
    // Chunks: W1 W1 K1 W2 W2 K2 W3 W3 K3 free.
    assert_eq!(pool.memory(0).fragmentation, 0.0);
    pool.release(1);
    pool.release(3);
    // Free runs of 3 and 4 chunks: the largest is 4 of the 7 free.
    let m = pool.memory(0);
    assert_eq!(m.free, 7 * GIB);
    assert!(
        (m.fragmentation - 3.0 / 7.0).abs() < 1e-9,
        "{}",
        m.fragmentation
    );
    // A 5-chunk model no longer fits, though 7 chunks are free.
    assert!(pool.place(4, need(5, Some(1)), all).is_err());
    // A 3-chunk one takes the run that fits it best (3, not 4), leaving the 4-run whole
    // but for its KV chunk.
    pool.place(5, need(3, Some(1)), all).unwrap();
    let m = pool.memory(0);
    assert_eq!((m.weights, m.kv, m.free), (5 * GIB, 2 * GIB, 3 * GIB));
    assert_eq!(m.fragmentation, 0.0);
}

#[test]
fn an_unknown_device_reads_as_empty() {
    let pool = MemoryPool::new(&[budget(1, 0, 0)], GIB);
    assert_eq!(pool.memory(3), DeviceMemory::default());
}
