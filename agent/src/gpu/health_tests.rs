use super::*;

fn thresholds() -> HealthThresholds {
    HealthThresholds {
        retry_seconds: 10.0,
        max_retry_seconds: 40.0,
        ..HealthThresholds::default()
    }
}

fn reading(temperature: u32, xids: &[u64], ecc: u64) -> Telemetry {
    Telemetry {
        temperature_c: Some(temperature),
        ecc_uncorrected: Some(ecc),
        xid_errors: xids.to_vec(),
        ..Telemetry::default()
    }
}

#[test]
fn readings_map_to_verdicts_by_the_thresholds() {
    let t = thresholds();
    let base = Some(2);
    assert_eq!(t.verdict(&reading(60, &[], 2), base), Verdict::Healthy);
    assert!(matches!(t.verdict(&reading(90, &[], 2), base), Verdict::Degraded(r) if r == "90 °C"));
    assert!(matches!(
        t.verdict(&reading(96, &[], 2), base),
        Verdict::Failed(_)
    ));
    assert!(matches!(t.verdict(&reading(60, &[79], 2), base), Verdict::Failed(r) if r == "XID 79"));
    assert!(
        matches!(t.verdict(&reading(60, &[13], 2), base), Verdict::Degraded(r) if r == "XID 13")
    );
    // Errors already counted at start are not new; one more is.
    assert!(
        matches!(t.verdict(&reading(60, &[], 3), base), Verdict::Failed(r) if r.contains("1 new"))
    );
    let throttled = Telemetry {
        throttle_reasons: vec!["SW_POWER_CAP".into()],
        ..Telemetry::default()
    };
    assert_eq!(t.verdict(&throttled, None), Verdict::Healthy);
    let slowed = Telemetry {
        throttle_reasons: vec!["HW_SLOWDOWN".into()],
        ..Telemetry::default()
    };
    assert!(matches!(t.verdict(&slowed, None), Verdict::Degraded(_)));
}

#[test]
fn degraded_comes_and_goes_with_the_readings() {
    let (t, now) = (thresholds(), Instant::now());
    let mut h = DeviceHealth::default();
    assert!(!h.observe(Verdict::Degraded("hot".into()), &t, now));
    assert_eq!(h.state(), HealthState::Degraded);
    assert_eq!(h.reason(), Some("hot"));
    assert!(h.state().schedulable());
    h.observe(Verdict::Healthy, &t, now);
    assert_eq!(h.state(), HealthState::Healthy);
    assert_eq!(h.reason(), None);
}

#[test]
fn a_failed_device_waits_out_its_backoff_then_recovers() {
    let (t, start) = (thresholds(), Instant::now());
    let mut h = DeviceHealth::default();
    assert!(h.engine_fault("CUDA_ERROR_ILLEGAL_ADDRESS".into(), &t, start));
    assert_eq!(h.state(), HealthState::Failed);
    assert!(!h.state().schedulable());
    // A second fault while failed changes nothing; readings do not clear a failure.
    assert!(!h.engine_fault("again".into(), &t, start));
    h.observe(Verdict::Healthy, &t, start);
    assert_eq!(h.state(), HealthState::Failed);
    assert!(!h.retry_due(start + Duration::from_secs(9)));
    assert_eq!(h.retry_in(start), Some(Duration::from_secs(10)));
    assert!(h.retry_due(start + Duration::from_secs(10)));
    h.begin_recovery();
    assert_eq!(h.state(), HealthState::Recovering);
    assert!(!h.state().schedulable());
    h.recovered(start + Duration::from_secs(11));
    assert_eq!(h.state(), HealthState::Healthy);
}

#[test]
fn failures_in_a_row_double_the_backoff_up_to_the_limit() {
    let (t, start) = (thresholds(), Instant::now());
    let mut h = DeviceHealth::default();
    h.engine_fault("x".into(), &t, start);
    let mut waits = vec![h.retry_in(start)];
    for _ in 0..3 {
        h.begin_recovery();
        h.recovery_failed("still broken".into(), &t, start);
        waits.push(h.retry_in(start));
    }
    let secs = |s| Some(Duration::from_secs(s));
    assert_eq!(waits, vec![secs(10), secs(20), secs(40), secs(40)]);
    assert_eq!(h.failures(), 4);
}

#[test]
fn a_failed_reading_holds_the_retry_until_it_clears() {
    let (t, start) = (thresholds(), Instant::now());
    let mut h = DeviceHealth::default();
    assert!(h.observe(Verdict::Failed("97 °C".into()), &t, start));
    let later = start + Duration::from_secs(30);
    h.observe(Verdict::Failed("96 °C".into()), &t, later);
    assert!(!h.retry_due(later));
    assert_eq!(h.retry_in(later), None, "no timer while readings fail it");
    h.observe(Verdict::Healthy, &t, later);
    assert!(h.retry_due(later));
}

#[test]
fn a_device_up_long_enough_forgets_its_failures() {
    let (t, start) = (thresholds(), Instant::now());
    let mut h = DeviceHealth::default();
    h.engine_fault("x".into(), &t, start);
    h.begin_recovery();
    h.recovered(start);
    assert_eq!(h.failures(), 1);
    h.observe(Verdict::Healthy, &t, start + Duration::from_secs(39));
    assert_eq!(h.failures(), 1);
    h.observe(Verdict::Healthy, &t, start + Duration::from_secs(40));
    assert_eq!(h.failures(), 0);
}

#[test]
fn a_fault_while_recovering_fails_the_device_again() {
    let (t, start) = (thresholds(), Instant::now());
    let mut h = DeviceHealth::default();
    h.engine_fault("x".into(), &t, start);
    h.begin_recovery();
    assert!(h.observe(Verdict::Failed("XID 79".into()), &t, start));
    assert_eq!(h.state(), HealthState::Failed);
    assert_eq!(h.failures(), 2);
}

#[test]
fn settings_out_of_range_never_panic() {
    let now = Instant::now();
    for retry in [f64::NAN, -5.0, 1e300, f64::INFINITY] {
        let t = HealthThresholds {
            retry_seconds: retry,
            max_retry_seconds: retry,
            ..HealthThresholds::default()
        };
        let mut h = DeviceHealth::default();
        h.engine_fault("x".into(), &t, now);
        assert!(
            h.retry_in(now)
                .is_some_and(|d| d <= Duration::from_secs(86_400))
        );
        h.observe(Verdict::Healthy, &t, now);
    }
}
