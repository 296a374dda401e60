//! Value parsers of the `posenc plot` options. Each error message states the expected value,
//! which clap prints after the rejected value and the option's name.

pub(super) fn count(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(count) if count >= 1 => Ok(count),
        _ => Err("expected a whole number of at least 1".to_owned()),
    }
}

pub(super) fn length(text: &str) -> Result<usize, String> {
    text.parse::<usize>()
        .map_err(|_| "expected a whole number of at least 0".to_owned())
}

pub(super) fn even(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(count) if count >= 2 && count.is_multiple_of(2) => Ok(count),
        _ => Err("expected an even whole number of at least 2".to_owned()),
    }
}

pub(super) fn tokens(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(count) if count >= 1 => Ok(count),
        _ => Err("expected a whole number of tokens, at least 1".to_owned()),
    }
}

pub(super) fn distance(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(distance) if (1..u32::MAX).contains(&distance) => Ok(distance),
        _ => Err(format!(
            "expected a whole number of positions from 1 to {}",
            u32::MAX - 1
        )),
    }
}

pub(super) fn points(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(points) if (2..=65_536).contains(&points) => Ok(points),
        _ => Err("expected a whole number from 2 to 65536".to_owned()),
    }
}

pub(super) fn pixels(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(pixels) if (64..=8192).contains(&pixels) => Ok(pixels),
        _ => Err("expected a whole number of pixels from 64 to 8192".to_owned()),
    }
}

pub(super) fn float(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|value| value.is_finite())
        .ok_or_else(|| "expected a finite number".to_owned())
}

pub(super) fn positive(text: &str) -> Result<f64, String> {
    float(text)
        .ok()
        .filter(|&value| value > 0.0)
        .ok_or_else(|| "expected a finite number above 0".to_owned())
}

pub(super) fn base(text: &str) -> Result<f64, String> {
    float(text)
        .ok()
        .filter(|&value| value > 1.0)
        .ok_or_else(|| "expected a finite number above 1 (the RoPE base θ)".to_owned())
}

pub(super) fn factor(text: &str) -> Result<f64, String> {
    float(text)
        .ok()
        .filter(|&value| value >= 1.0)
        .ok_or_else(|| "expected a finite number of at least 1".to_owned())
}
