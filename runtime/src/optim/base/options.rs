//! The optimizers' options: their state-dict keys, and the checks that a
//! group's values are valid for its algorithm.

use super::*;

/// One option: its state-dict key, its bit, and how to read / write it as f64.
pub(super) struct OptionSpec {
    pub(super) key: &'static str,
    pub(super) bit: u16,
    pub(super) get: fn(&ParamGroup) -> f64,
    pub(super) set: fn(&mut ParamGroup, f64),
}

pub(super) fn b2f(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

pub(super) const OPTIONS: [OptionSpec; 14] = [
    OptionSpec {
        key: "lr",
        bit: opt::LR,
        get: |g| g.lr,
        set: |g, v| g.lr = v,
    },
    OptionSpec {
        key: "momentum",
        bit: opt::MOMENTUM,
        get: |g| g.momentum,
        set: |g, v| g.momentum = v,
    },
    OptionSpec {
        key: "dampening",
        bit: opt::DAMPENING,
        get: |g| g.dampening,
        set: |g, v| g.dampening = v,
    },
    OptionSpec {
        key: "nesterov",
        bit: opt::NESTEROV,
        get: |g| b2f(g.nesterov),
        set: |g, v| g.nesterov = v != 0.0,
    },
    OptionSpec {
        key: "betas.0",
        bit: opt::BETAS,
        get: |g| g.betas.0,
        set: |g, v| g.betas.0 = v,
    },
    OptionSpec {
        key: "betas.1",
        bit: opt::BETAS,
        get: |g| g.betas.1,
        set: |g, v| g.betas.1 = v,
    },
    OptionSpec {
        key: "alpha",
        bit: opt::ALPHA,
        get: |g| g.alpha,
        set: |g, v| g.alpha = v,
    },
    OptionSpec {
        key: "lr_decay",
        bit: opt::LR_DECAY,
        get: |g| g.lr_decay,
        set: |g, v| g.lr_decay = v,
    },
    OptionSpec {
        key: "initial_accumulator_value",
        bit: opt::INITIAL_ACCUMULATOR_VALUE,
        get: |g| g.initial_accumulator_value,
        set: |g, v| g.initial_accumulator_value = v,
    },
    OptionSpec {
        key: "eps",
        bit: opt::EPS,
        get: |g| g.eps,
        set: |g, v| g.eps = v,
    },
    OptionSpec {
        key: "weight_decay",
        bit: opt::WEIGHT_DECAY,
        get: |g| g.weight_decay,
        set: |g, v| g.weight_decay = v,
    },
    OptionSpec {
        key: "amsgrad",
        bit: opt::AMSGRAD,
        get: |g| b2f(g.amsgrad),
        set: |g, v| g.amsgrad = v != 0.0,
    },
    OptionSpec {
        key: "centered",
        bit: opt::CENTERED,
        get: |g| b2f(g.centered),
        set: |g, v| g.centered = v != 0.0,
    },
    OptionSpec {
        key: "maximize",
        bit: opt::MAXIMIZE,
        get: |g| b2f(g.maximize),
        set: |g, v| g.maximize = v != 0.0,
    },
];

/// The names of the options in `bits`, for messages.
pub(super) fn option_names(bits: u16) -> String {
    let mut names: Vec<&str> = Vec::new();
    for s in &OPTIONS {
        if bits & s.bit != 0 {
            let name = s.key.split('.').next().unwrap_or(s.key);
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names.join(", ")
}

/// PyTorch's range check of one option.
pub(super) fn check_field(bit: u16, g: &ParamGroup) -> std::result::Result<(), String> {
    let nonneg = |what: &str, v: f64, fix: &str| {
        if v >= 0.0 {
            Ok(())
        } else {
            Err(format!("Invalid {what}: {v} ({fix})"))
        }
    };
    match bit {
        opt::LR => nonneg("learning rate", g.lr, "the learning rate must be >= 0"),
        opt::WEIGHT_DECAY => nonneg(
            "weight_decay value",
            g.weight_decay,
            "weight_decay must be >= 0",
        ),
        opt::MOMENTUM => nonneg("momentum value", g.momentum, "momentum must be >= 0"),
        opt::EPS => nonneg("epsilon value", g.eps, "eps must be >= 0"),
        opt::ALPHA => nonneg("alpha value", g.alpha, "alpha must be >= 0"),
        opt::LR_DECAY => nonneg("lr_decay value", g.lr_decay, "lr_decay must be >= 0"),
        opt::INITIAL_ACCUMULATOR_VALUE => nonneg(
            "initial_accumulator_value value",
            g.initial_accumulator_value,
            "initial_accumulator_value must be >= 0",
        ),
        opt::BETAS => {
            for (i, b) in [g.betas.0, g.betas.1].into_iter().enumerate() {
                if !(0.0..1.0).contains(&b) {
                    return Err(format!(
                        "Invalid beta parameter at index {i}: {b} (betas must lie in [0, 1))"
                    ));
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Every range check of the options `algo` reads, then its own cross checks.
pub(super) fn check_group<A: Algorithm>(
    algo: &A,
    g: &ParamGroup,
) -> std::result::Result<(), String> {
    for s in &OPTIONS {
        if algo.options() & s.bit != 0 {
            check_field(s.bit, g)?;
        }
    }
    algo.check(g)
}
