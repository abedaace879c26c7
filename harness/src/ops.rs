//! What the harness measures: the ops (conv forward, conv backward as a whole
//! and as dx / dw / db alone, max and average pooling forward and backward,
//! linear forward and backward, batch norm's training forward, training
//! backward and evaluation forward, dropout forward and backward) and the
//! suite shapes they run on, with their analytic costs.

use kernels_core::suite::{CONV_SUITE, LINEAR_SUITE, NORM_SUITE, POOL_SUITE};
use kernels_core::{
    BatchNorm, ConvCase, Cost, Dropout, GradRequest, LinearCase, NormCase, PoolCase, PoolKind, Result, cost,
};

/// Bytes per element of every timed kernel (f32).
pub const ELEM_BYTES: usize = 4;

/// Batch norm's hyper-parameters in every run: PyTorch's defaults.
pub const BATCH_NORM: BatchNorm = BatchNorm { eps: 1e-5, momentum: 0.1 };

/// Dropout's parameters in every run: p = 0.5 (a dense layer's usual
/// rate), one fixed (seed, step) so every backend draws the same mask.
pub const DROPOUT: Dropout = Dropout { p: 0.5, seed: 0x5EED, step: 1 };

/// One measured op. `pool-*` is max pooling (the name predates average
/// pooling; results.json consumers use it), `avgpool-*` average pooling.
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
    AvgPoolForward,
    AvgPoolBackward,
    LinearForward,
    /// dx, dw and db from one backward call.
    LinearBackward,
    /// Training-mode forward: y, the saved batch statistics and the
    /// running statistics' update.
    BatchNormTrain,
    /// Training-mode backward: dx, dγ and dβ from the saved statistics.
    BatchNormBackward,
    /// Evaluation-mode forward with the running statistics.
    BatchNormEval,
    DropoutForward,
    DropoutBackward,
}

/// Which family of shapes an op runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Conv,
    Pool,
    Linear,
    /// Batch norm and dropout, on the activations of NORM_SUITE.
    Norm,
}

impl Op {
    pub const ALL: [Op; 16] = [
        Op::ConvForward,
        Op::ConvBackward,
        Op::ConvBackwardDx,
        Op::ConvBackwardDw,
        Op::ConvBackwardDb,
        Op::PoolForward,
        Op::PoolBackward,
        Op::AvgPoolForward,
        Op::AvgPoolBackward,
        Op::LinearForward,
        Op::LinearBackward,
        Op::BatchNormTrain,
        Op::BatchNormBackward,
        Op::BatchNormEval,
        Op::DropoutForward,
        Op::DropoutBackward,
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
            Op::AvgPoolForward => "avgpool-fwd",
            Op::AvgPoolBackward => "avgpool-bwd",
            Op::LinearForward => "linear-fwd",
            Op::LinearBackward => "linear-bwd",
            Op::BatchNormTrain => "bn-train",
            Op::BatchNormBackward => "bn-bwd",
            Op::BatchNormEval => "bn-eval",
            Op::DropoutForward => "dropout-fwd",
            Op::DropoutBackward => "dropout-bwd",
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
            Op::AvgPoolForward => "average pool forward (padding counted in the divisor)",
            Op::AvgPoolBackward => "average pool backward",
            Op::LinearForward => "linear forward",
            Op::LinearBackward => "linear backward (dx + dw + db)",
            Op::BatchNormTrain => "batch norm, training forward (batch statistics, running update)",
            Op::BatchNormBackward => "batch norm, training backward (dx + dγ + dβ)",
            Op::BatchNormEval => "batch norm, evaluation forward (running statistics)",
            Op::DropoutForward => "dropout forward (p = 0.5, inverted)",
            Op::DropoutBackward => "dropout backward (p = 0.5)",
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
            Op::PoolForward | Op::PoolBackward | Op::AvgPoolForward | Op::AvgPoolBackward => Family::Pool,
            Op::LinearForward | Op::LinearBackward => Family::Linear,
            Op::BatchNormTrain
            | Op::BatchNormBackward
            | Op::BatchNormEval
            | Op::DropoutForward
            | Op::DropoutBackward => Family::Norm,
        }
    }

    /// The pooling a pool op runs (None for the other families).
    pub fn pool_kind(self) -> Option<PoolKind> {
        match self {
            Op::PoolForward | Op::PoolBackward => Some(PoolKind::Max),
            Op::AvgPoolForward | Op::AvgPoolBackward => Some(PoolKind::Avg),
            _ => None,
        }
    }

    /// Whether the op moves data rather than computes (a few FLOPs per
    /// element): the tables show its GB/s beside its GFLOP/s.
    pub fn memory_bound(self) -> bool {
        matches!(self.family(), Family::Pool | Family::Norm) || self == Op::ConvBackwardDb
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
    Norm(&'static NormCase),
}

impl Shape {
    /// Every shape of the suite, in suite order: conv, pool, linear, norm.
    pub fn all() -> Vec<Shape> {
        CONV_SUITE
            .iter()
            .map(Shape::Conv)
            .chain(POOL_SUITE.iter().map(Shape::Pool))
            .chain(LINEAR_SUITE.iter().map(Shape::Linear))
            .chain(NORM_SUITE.iter().map(Shape::Norm))
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
            Shape::Norm(b) => b.name,
        }
    }

    pub fn family(&self) -> Family {
        match self {
            Shape::Conv(_) => Family::Conv,
            Shape::Pool(_) => Family::Pool,
            Shape::Linear(_) => Family::Linear,
            Shape::Norm(_) => Family::Norm,
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
            Shape::Norm(b) => {
                let dims: Vec<String> = b.shape().iter().map(usize::to_string).collect();
                format!("{}, per {}", dims.join("x"), if b.rank == 2 { "feature" } else { "channel" })
            }
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
                let g = case.geometry(op.pool_kind().unwrap_or(PoolKind::Max))?;
                match op {
                    Op::PoolForward | Op::AvgPoolForward => cost::pool2d_forward(&g, e),
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
            Shape::Norm(case) => {
                let g = case.geometry()?;
                match op {
                    Op::BatchNormTrain => cost::batch_norm_train(&g, e),
                    Op::BatchNormBackward => cost::batch_norm_backward(&g, e),
                    Op::BatchNormEval => cost::batch_norm_eval(&g, e),
                    _ => cost::dropout(g.len(), e),
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
        // results.json consumers and the README know max pooling by these.
        assert_eq!((Op::PoolForward.name(), Op::PoolBackward.name()), ("pool-fwd", "pool-bwd"));
        let mut sorted = Op::ALL;
        sorted.sort();
        assert_eq!(sorted, Op::ALL, "ALL is in the order selections sort to");
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
        let p1 = Shape::parse("lenet-p1").unwrap();
        assert_eq!(p1.cost(Op::AvgPoolForward).unwrap(), p1.cost(Op::PoolForward).unwrap());
        assert_eq!(p1.cost(Op::AvgPoolBackward).unwrap().unwrap().flops, 256 * 6 * 14 * 14 * 4);
    }

    #[test]
    fn norm_costs_come_from_kernels_core() {
        let bn1 = Shape::parse("lenet-bn1").unwrap();
        let len = 256 * 6 * 28 * 28;
        assert_eq!(bn1.describe(), "256x6x28x28, per channel");
        assert_eq!(bn1.cost(Op::BatchNormTrain).unwrap().unwrap().flops, 7 * len);
        assert_eq!(bn1.cost(Op::BatchNormBackward).unwrap().unwrap().flops, 11 * len);
        assert_eq!(bn1.cost(Op::BatchNormEval).unwrap().unwrap().flops, 3 * len);
        assert_eq!(bn1.cost(Op::DropoutBackward).unwrap().unwrap(), Cost { flops: len, bytes: 8 * len });
        let bn3 = Shape::parse("lenet-bn3").unwrap();
        assert_eq!(bn3.describe(), "256x120, per feature");
        assert!(bn3.cost(Op::ConvForward).unwrap().is_none());
        assert!(Op::DropoutForward.memory_bound() && !Op::ConvForward.memory_bound());
    }
}
