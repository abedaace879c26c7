//! What the harness measures: the ops (conv forward, conv backward as a whole
//! and as dx / dw / db alone, max-pool forward and backward, linear forward
//! and backward) and the suite shapes they run on, with their analytic costs.

use kernels_core::suite::{CONV_SUITE, LINEAR_SUITE, POOL_SUITE};
use kernels_core::{ConvCase, Cost, GradRequest, LinearCase, PoolCase, PoolKind, Result, cost};

/// Bytes per element of every timed kernel (f32).
pub const ELEM_BYTES: usize = 4;

/// One measured op. Pooling is max pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    ConvForward,
    /// dx, dw and db from one backward call.
    ConvBackward,
    ConvBackwardDx,
    ConvBackwardDw,
    ConvBackwardDb,
    PoolForward,
    PoolBackward,
    LinearForward,
    /// dx, dw and db from one backward call.
    LinearBackward,
}

/// Which family of shapes an op runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Conv,
    Pool,
    Linear,
}

impl Op {
    pub const ALL: [Op; 9] = [
        Op::ConvForward,
        Op::ConvBackward,
        Op::ConvBackwardDx,
        Op::ConvBackwardDw,
        Op::ConvBackwardDb,
        Op::PoolForward,
        Op::PoolBackward,
        Op::LinearForward,
        Op::LinearBackward,
    ];

    /// The name used on the command line, in results.json and in bench ids.
    pub fn name(self) -> &'static str {
        match self {
            Op::ConvForward => "conv-fwd",
            Op::ConvBackward => "conv-bwd",
            Op::ConvBackwardDx => "conv-dx",
            Op::ConvBackwardDw => "conv-dw",
            Op::ConvBackwardDb => "conv-db",
            Op::PoolForward => "pool-fwd",
            Op::PoolBackward => "pool-bwd",
            Op::LinearForward => "linear-fwd",
            Op::LinearBackward => "linear-bwd",
        }
    }

    /// A title for tables and charts.
    pub fn title(self) -> &'static str {
        match self {
            Op::ConvForward => "conv2d forward",
            Op::ConvBackward => "conv2d backward (dx + dw + db in one call)",
            Op::ConvBackwardDx => "conv2d backward, dx only",
            Op::ConvBackwardDw => "conv2d backward, dw only",
            Op::ConvBackwardDb => "conv2d backward, db only",
            Op::PoolForward => "max pool forward",
            Op::PoolBackward => "max pool backward",
            Op::LinearForward => "linear forward",
            Op::LinearBackward => "linear backward (dx + dw + db)",
        }
    }

    pub fn parse(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.name() == name)
    }

    pub fn family(self) -> Family {
        match self {
            Op::ConvForward | Op::ConvBackward | Op::ConvBackwardDx | Op::ConvBackwardDw | Op::ConvBackwardDb => {
                Family::Conv
            }
            Op::PoolForward | Op::PoolBackward => Family::Pool,
            Op::LinearForward | Op::LinearBackward => Family::Linear,
        }
    }

    /// The gradients a conv or linear backward op asks for.
    pub fn grad_request(self) -> GradRequest {
        match self {
            Op::ConvBackwardDx => GradRequest { dx: true, dw: false, db: false },
            Op::ConvBackwardDw => GradRequest { dx: false, dw: true, db: false },
            Op::ConvBackwardDb => GradRequest { dx: false, dw: false, db: true },
            _ => GradRequest::ALL,
        }
    }
}

/// One shape of the suite.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shape {
    Conv(&'static ConvCase),
    Pool(&'static PoolCase),
    Linear(&'static LinearCase),
}

impl Shape {
    /// Every shape of the suite, in suite order: conv, pool, linear.
    pub fn all() -> Vec<Shape> {
        CONV_SUITE
            .iter()
            .map(Shape::Conv)
            .chain(POOL_SUITE.iter().map(Shape::Pool))
            .chain(LINEAR_SUITE.iter().map(Shape::Linear))
            .collect()
    }

    pub fn parse(name: &str) -> Option<Shape> {
        Shape::all().into_iter().find(|s| s.name() == name)
    }

    pub fn name(&self) -> &'static str {
        match self {
            Shape::Conv(c) => c.name,
            Shape::Pool(p) => p.name,
            Shape::Linear(l) => l.name,
        }
    }

    pub fn family(&self) -> Family {
        match self {
            Shape::Conv(_) => Family::Conv,
            Shape::Pool(_) => Family::Pool,
            Shape::Linear(_) => Family::Linear,
        }
    }

    /// A one-line description for tables: input, filters or window, stride, padding.
    pub fn describe(&self) -> String {
        match self {
            Shape::Conv(c) => {
                let [n, ch, h, w] = c.input;
                let [k, r, s] = c.filters;
                format!("{n}x{ch}x{h}x{w}, {k}x{r}x{s} s{} p{}", c.stride, c.padding)
            }
            Shape::Pool(p) => {
                let [n, ch, h, w] = p.input;
                format!("{n}x{ch}x{h}x{w}, {0}x{0} s{1} p{2}", p.window, p.stride, p.padding)
            }
            Shape::Linear(l) => format!("{}x{} -> {}", l.batch, l.inputs, l.outputs),
        }
    }

    /// Analytic FLOPs and bytes of `op` on this shape (None if the op does
    /// not run on this family of shapes).
    pub fn cost(&self, op: Op) -> Result<Option<Cost>> {
        if op.family() != self.family() {
            return Ok(None);
        }
        let e = ELEM_BYTES;
        let c = match self {
            Shape::Conv(case) => {
                let g = case.geometry()?;
                match op {
                    Op::ConvForward => cost::conv2d_forward(&g, true, e),
                    Op::ConvBackward => cost::conv2d_backward(&g, e),
                    Op::ConvBackwardDx => cost::conv2d_backward_dx(&g, e),
                    Op::ConvBackwardDw => cost::conv2d_backward_dw(&g, e),
                    _ => cost::conv2d_backward_db(&g, e),
                }
            }
            Shape::Pool(case) => {
                let g = case.geometry(PoolKind::Max)?;
                match op {
                    Op::PoolForward => cost::pool2d_forward(&g, e),
                    _ => cost::pool2d_backward(&g, e),
                }
            }
            Shape::Linear(case) => {
                let g = case.geometry()?;
                match op {
                    Op::LinearForward => cost::linear_forward(&g, true, e),
                    _ => cost::linear_backward(&g, e),
                }
            }
        };
        Ok(Some(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for op in Op::ALL {
            assert_eq!(Op::parse(op.name()), Some(op));
        }
        for s in Shape::all() {
            assert_eq!(Shape::parse(s.name()).map(|p| p.name()), Some(s.name()));
        }
        assert_eq!(Op::parse("conv"), None);
    }

    #[test]
    fn costs_follow_the_families() {
        let c2 = Shape::parse("lenet-c2").unwrap();
        let fwd = c2.cost(Op::ConvForward).unwrap().unwrap();
        assert_eq!(fwd.flops, 2 * 256 * 16 * 10 * 10 * 6 * 25);
        let bwd = c2.cost(Op::ConvBackward).unwrap().unwrap();
        assert_eq!(bwd.flops, 2 * fwd.flops + 256 * 16 * 10 * 10);
        assert!(c2.cost(Op::PoolForward).unwrap().is_none());
        let fc1 = Shape::parse("lenet-fc1").unwrap();
        assert_eq!(fc1.cost(Op::LinearForward).unwrap().unwrap().flops, 2 * 256 * 400 * 120);
    }
}
