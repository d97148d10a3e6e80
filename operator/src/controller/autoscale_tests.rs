use super::*;

fn spec(min: i32, max: i32, delay_seconds: i32) -> AutoscalingSpec {
    AutoscalingSpec {
        scale_down_delay_seconds: delay_seconds,
        target_load: 0.5,
        ..AutoscalingSpec::between(min, max)
    }
}

/// `replicas` agents of 8 slots, each running `running` and queueing `queued`.
fn seen(replicas: i32, running: u32, queued: u32, held: u32) -> Observation {
    let agent = AgentLoad {
        running,
        queued,
        max_batch_size: 8,
    };
    Observation {
        replicas,
        agents: vec![agent; usize::try_from(replicas).unwrap()],
        held,
        slots_per_agent: 8,
    }
}

#[test]
fn the_load_needs_work_over_the_slots_at_target() {
    let s = spec(0, 100, 60);
    // 2 agents x (8 running + 4 queued) = 24 requests; 8 slots at 0.5 = 4 per agent.
    assert_eq!(needed(&s, &seen(2, 8, 4, 0)), 6);
    assert_eq!(needed(&s, &seen(2, 0, 0, 0)), 0);
    // Held requests at zero agents count with the spec's batch size.
    assert_eq!(needed(&s, &seen(0, 0, 0, 9)), 3);
}

#[test]
fn a_burst_from_zero_gets_every_agent_it_needs_in_one_decision() {
    let mut a = Autoscaler::default();
    let now = Instant::now();
    let d = a.decide(&spec(0, 10, 60), &seen(0, 0, 0, 30), now);
    assert_eq!(
        d,
        Decision {
            replicas: 8,
            reason: Reason::ScaledUp,
            needed: 8
        }
    );
    // One request at zero: one agent.
    let d = a.decide(&spec(0, 10, 60), &seen(0, 0, 0, 1), now);
    assert_eq!((d.replicas, d.reason), (1, Reason::ScaledUp));
}

#[test]
fn scale_up_is_bounded_by_max_and_by_the_step() {
    let mut a = Autoscaler::default();
    let now = Instant::now();
    let d = a.decide(&spec(1, 5, 60), &seen(2, 8, 40, 0), now);
    assert_eq!((d.replicas, d.reason), (5, Reason::AtMaximum));
    // A pool of 2 that suddenly needs 100 grows by the step of 8, not to 100 at once.
    let d = a.decide(&spec(1, 1000, 60), &seen(2, 8, 192, 0), now);
    assert_eq!((d.replicas, d.needed), (10, 100));
    // A pool of 20 may double: step-limited, not yet at its maximum.
    let d = a.decide(&spec(1, 1000, 60), &seen(20, 8, 200, 0), now);
    assert_eq!((d.replicas, d.reason), (40, Reason::ScaledUp));
}

#[test]
fn scale_down_waits_out_the_delay_and_goes_one_step_at_a_time() {
    let mut a = Autoscaler::default();
    let start = Instant::now();
    let s = spec(1, 10, 60);
    let idle = seen(4, 0, 0, 0);
    assert_eq!(a.decide(&s, &idle, start).reason, Reason::Steady);
    let later = start + Duration::from_secs(59);
    assert_eq!(a.decide(&s, &idle, later).replicas, 4);
    let due = start + Duration::from_secs(60);
    let d = a.decide(&s, &idle, due);
    assert_eq!((d.replicas, d.reason), (3, Reason::ScaledDown));
    // The next step waits a whole delay again.
    let idle = seen(3, 0, 0, 0);
    assert_eq!(
        a.decide(&s, &idle, due + Duration::from_secs(1)).replicas,
        3
    );
    assert_eq!(
        a.decide(&s, &idle, due + Duration::from_secs(61)).replicas,
        2
    );
}

#[test]
fn a_load_spike_during_the_delay_starts_it_over() {
    let mut a = Autoscaler::default();
    let start = Instant::now();
    let s = spec(1, 10, 60);
    a.decide(&s, &seen(4, 0, 0, 0), start);
    // Back at target for a moment: the low period ends.
    a.decide(&s, &seen(4, 4, 0, 0), start + Duration::from_secs(30));
    let d = a.decide(&s, &seen(4, 0, 0, 0), start + Duration::from_secs(61));
    assert_eq!((d.replicas, d.reason), (4, Reason::Steady));
}

#[test]
fn the_bounds_hold_at_min_and_zero() {
    let mut a = Autoscaler::default();
    let now = Instant::now();
    // Never below min, whatever the load.
    let d = a.decide(&spec(2, 10, 0), &seen(2, 0, 0, 0), now);
    assert_eq!((d.replicas, d.reason), (2, Reason::Steady));
    // Below min (just set): up to min at once.
    let d = a.decide(&spec(3, 10, 0), &seen(1, 0, 0, 0), now);
    assert_eq!(d.replicas, 3);
    // min 0: an idle pool goes to zero, one step per delay.
    let d = a.decide(&spec(0, 10, 0), &seen(1, 0, 0, 0), now);
    assert_eq!((d.replicas, d.reason), (0, Reason::ScaledDown));
    let d = a.decide(&spec(0, 10, 0), &seen(0, 0, 0, 0), now);
    assert_eq!((d.replicas, d.reason), (0, Reason::Steady));
}
