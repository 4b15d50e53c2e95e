//! Samples and their summaries: "run N times, take the median".

/// Milliseconds measured over several runs.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    values: Vec<f64>,
}

impl Samples {
    /// No samples yet.
    pub fn new() -> Samples {
        Samples::default()
    }

    /// Adds one measurement.
    pub fn push(&mut self, v: f64) {
        self.values.push(v);
    }

    /// How many measurements.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// The measurements, in the order they were made.
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    /// True when nothing was measured.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    fn sorted(&self) -> Vec<f64> {
        let mut v = self.values.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    /// The median (the mean of the two middle values for an even count); `None` when empty.
    pub fn median(&self) -> Option<f64> {
        let v = self.sorted();
        let mid = v.len() / 2;
        match v.len() {
            0 => None,
            n if n % 2 == 1 => v.get(mid).copied(),
            _ => Some((v.get(mid - 1)? + v.get(mid)?) / 2.0),
        }
    }

    /// The smallest value.
    pub fn min(&self) -> Option<f64> {
        self.sorted().first().copied()
    }

    /// The largest value.
    pub fn max(&self) -> Option<f64> {
        self.sorted().last().copied()
    }
}

impl FromIterator<f64> for Samples {
    fn from_iter<I: IntoIterator<Item = f64>>(iter: I) -> Samples {
        Samples {
            values: iter.into_iter().collect(),
        }
    }
}

/// `a / b`, when both exist and `b` is not zero.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => Some(a / b),
        _ => None,
    }
}

/// A duration in milliseconds for a table: `12.3 ms`, or `n/a`.
pub fn ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v.abs() >= 100.0 => format!("{v:.0} ms"),
        Some(v) => format!("{v:.1} ms"),
        None => "n/a".to_string(),
    }
}

/// A ratio for a table: `0.84x`, or `n/a`.
pub fn times(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.2}x"))
}

/// `median (min–max)` of `s`.
pub fn spread(s: &Samples) -> String {
    match (s.median(), s.min(), s.max()) {
        (Some(m), Some(lo), Some(hi)) => format!("{} ({:.0}–{:.0})", ms(Some(m)), lo, hi),
        _ => "n/a".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(Samples::new().median(), None);
        let s: Samples = [3.0, 1.0, 2.0].into_iter().collect();
        assert_eq!(s.median(), Some(2.0));
        assert_eq!((s.min(), s.max()), (Some(1.0), Some(3.0)));
        let s: Samples = [4.0, 1.0, 2.0, 3.0].into_iter().collect();
        assert_eq!(s.median(), Some(2.5));
        assert_eq!(s.len(), 4);
    }

    #[test]
    fn formatting() {
        assert_eq!(ms(Some(12.34)), "12.3 ms");
        assert_eq!(ms(Some(1234.4)), "1234 ms");
        assert_eq!(ms(None), "n/a");
        assert_eq!(times(ratio(Some(1.0), Some(2.0))), "0.50x");
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
        let s: Samples = [1.0, 5.0, 3.0].into_iter().collect();
        assert_eq!(spread(&s), "3.0 ms (1–5)");
    }
}
