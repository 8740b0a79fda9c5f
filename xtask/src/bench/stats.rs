//! The arithmetic: medians (the machine's noise is large and one-sided, so no means) and ratios.

/// The median of `values`: the middle one, or the mean of the two middle ones; `None` when
/// there are none or one is NaN.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() || values.iter().any(|v| v.is_nan()) {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        f64::midpoint(sorted[mid - 1], sorted[mid])
    })
}

/// `traced / untraced`, `None` when the untraced figure is not positive.
pub fn ratio(traced: f64, untraced: f64) -> Option<f64> {
    (untraced > 0.0).then(|| traced / untraced)
}

/// Nanoseconds per event, `None` without events.
#[expect(
    clippy::cast_precision_loss,
    reason = "a figure for people: 52 bits of nanoseconds and events are plenty"
)]
pub fn per_event(run_time_ns: u64, run_cnt: u64) -> Option<f64> {
    (run_cnt > 0).then(|| run_time_ns as f64 / run_cnt as f64)
}

#[cfg(test)]
mod tests {
    use super::{median, per_event, ratio};

    #[test]
    fn median_of_odd_and_even_counts_in_any_order() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[7.5]), Some(7.5));
        // One outlier does not move it.
        assert_eq!(median(&[1.0, 1.1, 100.0]), Some(1.1));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn ratio_of_medians() {
        assert_eq!(ratio(1.08, 1.0), Some(1.08));
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio(1.0, -1.0), None);
    }

    #[test]
    fn nanoseconds_per_event() {
        assert_eq!(per_event(1_000_000, 4000), Some(250.0));
        assert_eq!(per_event(5, 0), None);
    }
}
