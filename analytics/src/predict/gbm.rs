//! Gradient-boosted decision trees: second-order (Newton) boosting of regression trees on
//! histogram bins, as XGBoost's `hist` method and LightGBM do it, written here because
//! linfa 0.8 has neither gradient boosting nor regression trees. For learners whose
//! features interact (a part's age × its alarm counts × the device model) and for
//! remaining-life regression on sensor features.
//!
//! **Method.** The margin starts at a constant base score (the mean of `y` for
//! [`Loss::Squared`], its log-odds for [`Loss::Logistic`]). Each round computes the loss's
//! gradient `g` and hessian `h` per training row at the current margin, draws a row
//! subsample (`subsample`, deterministic with `seed`) and grows one tree depth-first to
//! `max_depth`. A node's split is the one of largest
//! `gain = G_L²/(H_L+λ) + G_R²/(H_R+λ) − G²/(H+λ)` (sums of `g` and `h` of its rows, `λ` =
//! `l2`) with at least `min_samples_leaf` rows on each side; a node without a positive-gain
//! split is a leaf. A node's value is `−G/(H+λ) × learning_rate`; a row's margin grows by
//! its leaf's value. Candidate splits are the cuts between the quantile bins (at most
//! `bins` per feature) of the training values: the features are binned once into a `u8`
//! matrix stored column by column, a node's histogram of `(G, H, count)` per bin is one
//! pass over its rows (their gradients gathered in row order first), and a split node
//! builds only its smaller child's histogram (the larger one is the parent's minus it).
//! The features are shared among the cores, each feature's histogram summed by one thread
//! in row order, so the model does not depend on the number of cores. 200 000 rows × 100
//! features × 200 trees take about 10 s of CPU in release (the `timing` test).
//!
//! **Missing values.** `NaN` is missing. Each candidate split is tried with the node's
//! missing rows on the left and on the right, and the better is kept as the node's default
//! direction (XGBoost's sparsity-aware split); "every present value left, missing right"
//! is a candidate too, so missingness itself can be split on. At a node whose training rows
//! had no missing value, `NaN` follows the child that had more training rows. `±∞` are
//! treated as `±f64::MAX`.
//!
//! **Explanations.** Every node keeps its value (what it would predict as a leaf), so
//! [`Gbm::contributions`] credits each split on a row's path with the change of value it
//! makes (Saabas): the contributions plus [`Gbm::bias`] sum to the raw margin.
//! [`Gbm::feature_importance`] is the total gain of each feature's splits.
//!
//! **Storage.** [`Gbm`] is serde (flat node arrays per tree), checked when read back. The
//! crate enables serde_json's `float_roundtrip`: without it, about one number in ten read
//! back from JSON text is one ulp off, and a reloaded model would not predict the same.
//!
//! **Defaults** ([`GbmOptions`]): 200 trees at learning rate 0.05 (small steps generalise
//! better than few large ones, Friedman 2001; 200 × 0.05 leaves room for validation to
//! stop earlier, [`fit_with_validation`]); depth 4 (interactions of up to four features, 16
//! leaves); at least 20 rows per leaf (failures are rare: a leaf of a handful of rows is
//! noise); row subsample 0.8 (stochastic gradient boosting, Friedman 2002, lowers
//! variance); `l2` 1.0 (XGBoost's default `λ`, which also bounds the leaves of nearly
//! certain logistic nodes, whose hessian vanishes); 64 quantile bins per feature (enough
//! for noisy sensor values, a quarter of LightGBM's 255, so histograms stay small).

use std::ops::Range;

use serde::{Deserialize, Serialize};

/// Largest `bins`: a bin code is a `u8` and each feature keeps one code for missing.
pub const MAX_BINS: usize = 255;
/// Largest `max_depth`.
pub const MAX_DEPTH: usize = 16;
/// Histogram updates below which a node's histogram is built on one thread (starting
/// threads costs more than it saves).
const PARALLEL_WORK: usize = 200_000;
/// Smallest hessian of a logistic row (a row predicted with certainty still counts).
const MIN_HESSIAN: f64 = 1e-16;

/// The loss the trees minimise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// Binary log loss, `y ∈ {0, 1}`; the margin is the log-odds, a prediction the
    /// probability of 1.
    Logistic,
    /// Half the squared error; a prediction is the value.
    Squared,
}

impl Loss {
    /// Gradient and hessian of the loss at `margin` for the target `y`.
    fn gradient(self, margin: f64, y: f64) -> (f64, f64) {
        match self {
            Loss::Logistic => {
                let p = sigmoid(margin);
                (p - y, (p * (1.0 - p)).max(MIN_HESSIAN))
            }
            Loss::Squared => (margin - y, 1.0),
        }
    }

    /// The prediction of a margin.
    fn transform(self, margin: f64) -> f64 {
        match self {
            Loss::Logistic => sigmoid(margin),
            Loss::Squared => margin,
        }
    }

    /// The loss of one row (log loss; squared error), as the validation measures it.
    fn value(self, margin: f64, y: f64) -> f64 {
        match self {
            // log(1 + e^m) − y·m, without overflow
            Loss::Logistic => margin.max(0.0) + (-margin.abs()).exp().ln_1p() - y * margin,
            Loss::Squared => (margin - y).powi(2),
        }
    }

    /// The constant margin that minimises the loss on `y`.
    fn base_score(self, y: &[f64]) -> f64 {
        let mean = y.iter().sum::<f64>() / y.len() as f64;
        match self {
            Loss::Logistic => {
                // all one class: a finite margin, the trees cannot move far from it anyway
                let p = mean.clamp(1e-6, 1.0 - 1e-6);
                (p / (1.0 - p)).ln()
            }
            Loss::Squared => mean,
        }
    }
}

fn sigmoid(m: f64) -> f64 {
    1.0 / (1.0 + (-m).exp())
}

const fn default_trees() -> usize {
    200
}
const fn default_learning_rate() -> f64 {
    0.05
}
const fn default_max_depth() -> usize {
    4
}
const fn default_min_samples_leaf() -> usize {
    20
}
const fn default_subsample() -> f64 {
    0.8
}
const fn default_l2() -> f64 {
    1.0
}
const fn default_bins() -> usize {
    64
}
const fn default_seed() -> u64 {
    0
}
const fn default_early_stopping_rounds() -> usize {
    20
}

/// How the trees are grown (defaults and why: the module's head comment).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GbmOptions {
    /// Boosting rounds: one tree each (the most with [`fit_with_validation`]).
    #[serde(default = "default_trees")]
    pub trees: usize,
    /// Shrinkage of every leaf value.
    #[serde(default = "default_learning_rate")]
    pub learning_rate: f64,
    /// Splits from the root to the deepest leaf.
    #[serde(default = "default_max_depth")]
    pub max_depth: usize,
    /// Sampled training rows a leaf has at least.
    #[serde(default = "default_min_samples_leaf")]
    pub min_samples_leaf: usize,
    /// Share of the training rows each tree is grown on (drawn per tree with `seed`).
    #[serde(default = "default_subsample")]
    pub subsample: f64,
    /// L2 regularisation `λ` of the leaf values (XGBoost's `lambda`).
    #[serde(default = "default_l2")]
    pub l2: f64,
    /// Quantile bins per feature, computed on the training values: the split candidates.
    #[serde(default = "default_bins")]
    pub bins: usize,
    /// Seed of the row subsamples.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// [`fit_with_validation`] stops after this many trees without a better validation
    /// loss.
    #[serde(default = "default_early_stopping_rounds")]
    pub early_stopping_rounds: usize,
}

impl Default for GbmOptions {
    fn default() -> Self {
        GbmOptions {
            trees: default_trees(),
            learning_rate: default_learning_rate(),
            max_depth: default_max_depth(),
            min_samples_leaf: default_min_samples_leaf(),
            subsample: default_subsample(),
            l2: default_l2(),
            bins: default_bins(),
            seed: default_seed(),
            early_stopping_rounds: default_early_stopping_rounds(),
        }
    }
}

impl GbmOptions {
    /// Whether the options make sense; the message names the key (under `prefix`).
    pub fn check(&self, prefix: &str) -> Result<(), String> {
        let bad = |key: &str, why: &str| Err(format!("{prefix}.{key} {why}"));
        if self.trees == 0 {
            return bad("trees", "must be at least 1");
        }
        if !(self.learning_rate > 0.0 && self.learning_rate <= 1.0) {
            return bad("learning_rate", "must be above 0 and at most 1");
        }
        if !(1..=MAX_DEPTH).contains(&self.max_depth) {
            return bad("max_depth", &format!("must be between 1 and {MAX_DEPTH}"));
        }
        if self.min_samples_leaf == 0 {
            return bad("min_samples_leaf", "must be at least 1");
        }
        if !(self.subsample > 0.0 && self.subsample <= 1.0) {
            return bad("subsample", "must be above 0 and at most 1");
        }
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            return bad("l2", "must be 0 or more");
        }
        if !(2..=MAX_BINS).contains(&self.bins) {
            return bad("bins", &format!("must be between 2 and {MAX_BINS}"));
        }
        if self.early_stopping_rounds == 0 {
            return bad("early_stopping_rounds", "must be at least 1");
        }
        Ok(())
    }
}

/// One regression tree as flat arrays indexed by node; node 0 is the root and a node's
/// children come after it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    /// Split feature of an inner node (0 on a leaf).
    feature: Vec<u32>,
    /// An inner node sends a present value `≤ threshold` left (0 on a leaf).
    threshold: Vec<f64>,
    /// Where an inner node sends a missing value.
    default_left: Vec<bool>,
    /// Left child of an inner node; 0 marks a leaf.
    left: Vec<u32>,
    /// Right child of an inner node (0 on a leaf).
    right: Vec<u32>,
    /// The node's value `−G/(H+λ) × learning_rate`: the prediction of a leaf, the
    /// expected value of an inner node (for [`Gbm::contributions`]).
    value: Vec<f64>,
    /// Gain of an inner node's split (0 on a leaf).
    gain: Vec<f64>,
}

impl Tree {
    fn with_root(value: f64) -> Self {
        Tree {
            feature: vec![0],
            threshold: vec![0.0],
            default_left: vec![false],
            left: vec![0],
            right: vec![0],
            value: vec![value],
            gain: vec![0.0],
        }
    }

    /// Makes leaf `node` an inner node with two new leaf children; returns their indices.
    fn split(
        &mut self,
        node: usize,
        s: &Split,
        threshold: f64,
        values: (f64, f64),
    ) -> (usize, usize) {
        let left = self.value.len();
        for v in [values.0, values.1] {
            self.feature.push(0);
            self.threshold.push(0.0);
            self.default_left.push(false);
            self.left.push(0);
            self.right.push(0);
            self.value.push(v);
            self.gain.push(0.0);
        }
        self.feature[node] = s.feature as u32;
        self.threshold[node] = threshold;
        self.default_left[node] = s.default_left;
        self.left[node] = left as u32;
        self.right[node] = left as u32 + 1;
        self.gain[node] = s.gain;
        (left, left + 1)
    }

    fn is_leaf(&self, node: usize) -> bool {
        self.left[node] == 0
    }

    /// The child of inner `node` that `row` goes to.
    fn child(&self, node: usize, row: &[f64]) -> usize {
        let v = row[self.feature[node] as usize];
        let left = if v.is_nan() {
            self.default_left[node]
        } else {
            v.clamp(f64::MIN, f64::MAX) <= self.threshold[node]
        };
        (if left {
            self.left[node]
        } else {
            self.right[node]
        }) as usize
    }

    fn leaf(&self, row: &[f64]) -> usize {
        let mut node = 0;
        while !self.is_leaf(node) {
            node = self.child(node, row);
        }
        node
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.value.len()
    }

    /// A tree has at least its root.
    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }

    /// Whether the arrays describe a tree on `features` features.
    fn check(&self, features: usize) -> Result<(), String> {
        let n = self.value.len();
        if n == 0 {
            return Err("a tree has no node".into());
        }
        if [
            self.feature.len(),
            self.threshold.len(),
            self.default_left.len(),
            self.left.len(),
            self.right.len(),
            self.gain.len(),
        ]
        .iter()
        .any(|&l| l != n)
        {
            return Err("a tree's node arrays differ in length".into());
        }
        for i in 0..n {
            if !self.value[i].is_finite() || self.threshold[i].is_nan() {
                return Err(format!("node {i}: value or threshold not a number"));
            }
            if self.is_leaf(i) {
                continue;
            }
            let (l, r) = (self.left[i] as usize, self.right[i] as usize);
            // children after their parent: every path ends
            if l <= i || r <= i || l >= n || r >= n {
                return Err(format!("node {i}: children {l}, {r} out of order"));
            }
            if self.feature[i] as usize >= features {
                return Err(format!(
                    "node {i}: feature {} of {features}",
                    self.feature[i]
                ));
            }
        }
        Ok(())
    }
}

/// A fitted boosted ensemble; serde so it can live inside a model's JSON parameters
/// (deserialisation checks the trees, so a damaged blob is an error, not a panic).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "GbmData")]
pub struct Gbm {
    loss: Loss,
    base_score: f64,
    features: usize,
    trees: Vec<Tree>,
}

/// [`Gbm`] as stored, before its check.
#[derive(Deserialize)]
struct GbmData {
    loss: Loss,
    base_score: f64,
    features: usize,
    trees: Vec<Tree>,
}

impl TryFrom<GbmData> for Gbm {
    type Error = String;

    fn try_from(d: GbmData) -> Result<Self, String> {
        if !d.base_score.is_finite() {
            return Err("base_score must be a number".into());
        }
        for (k, t) in d.trees.iter().enumerate() {
            t.check(d.features).map_err(|e| format!("tree {k}: {e}"))?;
        }
        Ok(Gbm {
            loss: d.loss,
            base_score: d.base_score,
            features: d.features,
            trees: d.trees,
        })
    }
}

impl Gbm {
    /// The margin: base score plus the leaf value of every tree. `NaN` is missing.
    ///
    /// Panics if `row` does not have [`Gbm::n_features`] values.
    pub fn predict_raw(&self, row: &[f64]) -> f64 {
        self.check_row(row);
        self.base_score + self.trees.iter().map(|t| t.value[t.leaf(row)]).sum::<f64>()
    }

    /// The probability of 1 ([`Loss::Logistic`]) or the value ([`Loss::Squared`]).
    ///
    /// Panics if `row` does not have [`Gbm::n_features`] values.
    pub fn predict(&self, row: &[f64]) -> f64 {
        self.loss.transform(self.predict_raw(row))
    }

    /// Each feature's contribution to the margin of `row` (Saabas): along the row's path
    /// in every tree, the change of node value a split makes is credited to its feature.
    /// `bias() + contributions.sum() = predict_raw(row)`.
    ///
    /// Panics if `row` does not have [`Gbm::n_features`] values.
    pub fn contributions(&self, row: &[f64]) -> Vec<f64> {
        self.check_row(row);
        let mut c = vec![0.0; self.features];
        for t in &self.trees {
            let mut node = 0;
            while !t.is_leaf(node) {
                let next = t.child(node, row);
                c[t.feature[node] as usize] += t.value[next] - t.value[node];
                node = next;
            }
        }
        c
    }

    /// The margin before any split: the base score plus every tree's root value (the
    /// margin of an average row; what [`Gbm::contributions`] add to).
    pub fn bias(&self) -> f64 {
        self.base_score + self.trees.iter().map(|t| t.value[0]).sum::<f64>()
    }

    /// Total gain of the splits on each feature (the loss reduction they bought on the
    /// training rows; comparable within one model).
    pub fn feature_importance(&self) -> Vec<f64> {
        let mut g = vec![0.0; self.features];
        for t in &self.trees {
            for node in (0..t.len()).filter(|&n| !t.is_leaf(n)) {
                g[t.feature[node] as usize] += t.gain[node];
            }
        }
        g
    }

    pub fn loss(&self) -> Loss {
        self.loss
    }

    /// The constant margin the trees start from.
    pub fn base_score(&self) -> f64 {
        self.base_score
    }

    pub fn n_features(&self) -> usize {
        self.features
    }

    pub fn n_trees(&self) -> usize {
        self.trees.len()
    }

    pub fn trees(&self) -> &[Tree] {
        &self.trees
    }

    fn check_row(&self, row: &[f64]) {
        assert_eq!(
            row.len(),
            self.features,
            "a row has as many values as the model has features"
        );
    }
}

/// The validation loss along the boosting rounds of [`fit_with_validation`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ValidationCurve {
    /// `loss[k]`: mean validation loss (log loss; squared error) of the first `k` trees
    /// (`loss[0]`: the base score alone).
    pub loss: Vec<f64>,
    /// The trees kept: the count with the lowest validation loss.
    pub best_trees: usize,
}

/// Fits `options.trees` trees to the rows `x` (each of the same length; `NaN` is missing)
/// and targets `y` (0 or 1 for [`Loss::Logistic`]).
pub fn fit<R: AsRef<[f64]> + Sync>(
    x: &[R],
    y: &[f64],
    loss: Loss,
    options: &GbmOptions,
) -> Result<Gbm, String> {
    boost::<R, &[f64]>(x, y, loss, options, None).map(|(g, _)| g)
}

/// [`fit`], stopping once `options.early_stopping_rounds` trees in a row have not lowered
/// the loss on `(valid_x, valid_y)`; the model keeps the trees of the lowest loss.
pub fn fit_with_validation<R: AsRef<[f64]> + Sync, V: AsRef<[f64]>>(
    x: &[R],
    y: &[f64],
    loss: Loss,
    options: &GbmOptions,
    valid_x: &[V],
    valid_y: &[f64],
) -> Result<(Gbm, ValidationCurve), String> {
    let (gbm, curve) = boost(x, y, loss, options, Some((valid_x, valid_y)))?;
    Ok((gbm, curve.expect("a validation set gives a curve")))
}

fn check_data<R: AsRef<[f64]>>(
    x: &[R],
    y: &[f64],
    loss: Loss,
    features: usize,
    what: &str,
) -> Result<(), String> {
    if x.len() != y.len() {
        return Err(format!("{what}: {} rows but {} targets", x.len(), y.len()));
    }
    if let Some(i) = x.iter().position(|r| r.as_ref().len() != features) {
        return Err(format!(
            "{what}: row {i} has {} values, the first {features}",
            x[i].as_ref().len()
        ));
    }
    let bad = |&v: &f64| match loss {
        Loss::Logistic => v != 0.0 && v != 1.0,
        Loss::Squared => !v.is_finite(),
    };
    if let Some(i) = y.iter().position(bad) {
        return Err(format!(
            "{what}: target {i} is {} ({})",
            y[i],
            match loss {
                Loss::Logistic => "the logistic loss needs 0 or 1",
                Loss::Squared => "not a number",
            }
        ));
    }
    Ok(())
}

type Validation<'a, V> = Option<(&'a [V], &'a [f64])>;

fn boost<R: AsRef<[f64]> + Sync, V: AsRef<[f64]>>(
    x: &[R],
    y: &[f64],
    loss: Loss,
    options: &GbmOptions,
    valid: Validation<'_, V>,
) -> Result<(Gbm, Option<ValidationCurve>), String> {
    options.check("gbm")?;
    let Some(first) = x.first() else {
        return Err("no training rows".into());
    };
    let features = first.as_ref().len();
    check_data(x, y, loss, features, "training")?;
    if x.len() > u32::MAX as usize {
        return Err(format!("at most {} training rows", u32::MAX));
    }
    if let Some((vx, vy)) = valid {
        check_data(vx, vy, loss, features, "validation")?;
        if vx.is_empty() {
            return Err("no validation rows".into());
        }
    }

    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let data = Binned::new(x, features, options.bins, threads);
    let base_score = loss.base_score(y);
    let n = x.len();
    let mut margin = vec![base_score; n];
    let mut gh = vec![(0.0, 0.0); n];
    let mut rows: Vec<u32> = Vec::with_capacity(n);
    let mut rng = SplitMix64(options.seed);
    let grower = Grower {
        data: &data,
        options,
        threads,
    };

    let mut valid_margin = valid.map(|(vx, _)| vec![base_score; vx.len()]);
    let valid_loss = |m: &[f64], vy: &[f64]| {
        m.iter()
            .zip(vy)
            .map(|(&m, &y)| loss.value(m, y))
            .sum::<f64>()
            / vy.len() as f64
    };
    let mut curve = valid
        .zip(valid_margin.as_deref())
        .map(|((_, vy), m)| ValidationCurve {
            loss: vec![valid_loss(m, vy)],
            best_trees: 0,
        });

    let mut trees = Vec::with_capacity(options.trees);
    for _ in 0..options.trees {
        for (i, (m, t)) in margin.iter().zip(y).enumerate() {
            gh[i] = loss.gradient(*m, *t);
        }
        rows.clear();
        if options.subsample >= 1.0 {
            rows.extend(0..n as u32);
        } else {
            rows.extend((0..n as u32).filter(|_| rng.next_f64() < options.subsample));
        }
        let (tree, split_bins) = grower.grow(&gh, &mut rows);
        for (i, m) in margin.iter_mut().enumerate() {
            *m += tree.value[data.leaf(&tree, &split_bins, i)];
        }
        if let (Some((vx, vy)), Some(vm), Some(c)) = (valid, valid_margin.as_mut(), curve.as_mut())
        {
            for (m, r) in vm.iter_mut().zip(vx) {
                *m += tree.value[tree.leaf(r.as_ref())];
            }
            c.loss.push(valid_loss(vm, vy));
            let k = c.loss.len() - 1;
            if c.loss[k] < c.loss[c.best_trees] {
                c.best_trees = k;
            }
            trees.push(tree);
            if k - c.best_trees >= options.early_stopping_rounds {
                break;
            }
        } else {
            trees.push(tree);
        }
    }
    if let Some(c) = &curve {
        trees.truncate(c.best_trees);
    }
    Ok((
        Gbm {
            loss,
            base_score,
            features,
            trees,
        },
        curve,
    ))
}

/// The training features as quantile-bin codes, column by column.
struct Binned {
    rows: usize,
    /// Code of row `i`, feature `j` at `j * rows + i`: the bin (`≤ cuts[j].len()`) or
    /// `cuts[j].len() + 1` for missing.
    codes: Vec<u8>,
    /// Ascending cut points of each feature: bin `b` holds the values in
    /// `(cuts[b-1], cuts[b]]`.
    cuts: Vec<Vec<f64>>,
    /// Where each feature's histogram slots start (`cuts[j].len() + 2` slots: the bins and
    /// the missing values); the last entry is the histogram's length.
    offsets: Vec<usize>,
}

impl Binned {
    fn new<R: AsRef<[f64]> + Sync>(x: &[R], features: usize, bins: usize, threads: usize) -> Self {
        let rows = x.len();
        let groups = split_range(features, threads);
        let per_group: Vec<Vec<(Vec<f64>, Vec<u8>)>> = std::thread::scope(|s| {
            let handles: Vec<_> = groups
                .iter()
                .map(|g| {
                    let g = g.clone();
                    s.spawn(move || bin_features(x, g, bins))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a binning thread does not panic"))
                .collect()
        });
        let mut codes = Vec::with_capacity(rows * features);
        let mut cuts = Vec::with_capacity(features);
        let mut offsets = vec![0];
        for (c, col) in per_group.into_iter().flatten() {
            codes.extend_from_slice(&col);
            offsets.push(offsets[offsets.len() - 1] + c.len() + 2);
            cuts.push(c);
        }
        Binned {
            rows,
            codes,
            cuts,
            offsets,
        }
    }

    fn column(&self, j: usize) -> &[u8] {
        &self.codes[j * self.rows..(j + 1) * self.rows]
    }

    fn missing_code(&self, j: usize) -> u8 {
        (self.cuts[j].len() + 1) as u8
    }

    fn slots(&self) -> usize {
        self.offsets[self.offsets.len() - 1]
    }

    /// Whether training row `i` goes left at inner `node` (its split is on bins).
    fn goes_left(&self, tree: &Tree, split_bins: &[u8], node: usize, i: usize) -> bool {
        let j = tree.feature[node] as usize;
        let code = self.codes[j * self.rows + i];
        if code == self.missing_code(j) {
            tree.default_left[node]
        } else {
            code <= split_bins[node]
        }
    }

    /// The leaf of training row `i` (the same as [`Tree::leaf`] on its values).
    fn leaf(&self, tree: &Tree, split_bins: &[u8], i: usize) -> usize {
        let mut node = 0;
        while !tree.is_leaf(node) {
            node = if self.goes_left(tree, split_bins, node, i) {
                tree.left[node]
            } else {
                tree.right[node]
            } as usize;
        }
        node
    }
}

/// Cut points and codes of the features `range` (read eight columns per pass over the
/// rows, a cache line of each row).
fn bin_features<R: AsRef<[f64]>>(
    x: &[R],
    range: Range<usize>,
    bins: usize,
) -> Vec<(Vec<f64>, Vec<u8>)> {
    let mut out = Vec::with_capacity(range.len());
    let mut start = range.start;
    while start < range.end {
        let end = (start + 8).min(range.end);
        let mut columns = vec![Vec::with_capacity(x.len()); end - start];
        for r in x {
            for (c, &v) in columns.iter_mut().zip(&r.as_ref()[start..end]) {
                c.push(v.clamp(f64::MIN, f64::MAX));
            }
        }
        for col in columns {
            let present: Vec<f64> = col.iter().copied().filter(|v| !v.is_nan()).collect();
            let cuts = quantile_cuts(present, bins);
            let missing = (cuts.len() + 1) as u8;
            let codes = col
                .iter()
                .map(|&v| {
                    if v.is_nan() {
                        missing
                    } else {
                        cuts.partition_point(|&c| c < v) as u8
                    }
                })
                .collect();
            out.push((cuts, codes));
        }
        start = end;
    }
    out
}

/// At most `bins − 1` ascending cut points between the distinct `values` so that each bin
/// holds about as many values: all midpoints when there are at most `bins` distinct values.
fn quantile_cuts(mut values: Vec<f64>, bins: usize) -> Vec<f64> {
    values.sort_unstable_by(f64::total_cmp);
    let mut distinct: Vec<(f64, usize)> = Vec::new();
    for v in &values {
        match distinct.last_mut() {
            Some((last, count)) if *last == *v => *count += 1,
            _ => distinct.push((*v, 1)),
        }
    }
    // a value equal to a cut goes left, so a cut strictly below the next value
    let midpoint = |a: f64, b: f64| {
        let m = a / 2.0 + b / 2.0;
        if m < b { m.max(a) } else { a }
    };
    let n = values.len();
    let mut cuts = Vec::new();
    let mut below = 0;
    for w in distinct.windows(2) {
        below += w[0].1;
        if distinct.len() <= bins || below * bins >= (cuts.len() + 1) * n {
            cuts.push(midpoint(w[0].0, w[1].0));
            if cuts.len() == bins - 1 {
                break;
            }
        }
    }
    cuts
}

/// `0..n` in at most `parts` contiguous ranges of nearly equal length.
fn split_range(n: usize, parts: usize) -> Vec<Range<usize>> {
    let parts = parts.clamp(1, n.max(1));
    (0..parts)
        .map(|p| p * n / parts..(p + 1) * n / parts)
        .filter(|r| !r.is_empty())
        .collect()
}

/// Sums of gradients, hessians and rows.
#[derive(Clone, Copy, Debug, Default)]
struct Bin {
    g: f64,
    h: f64,
    n: usize,
}

impl Bin {
    fn add(&mut self, o: &Bin) {
        self.g += o.g;
        self.h += o.h;
        self.n += o.n;
    }

    fn minus(&self, o: &Bin) -> Bin {
        Bin {
            g: self.g - o.g,
            h: self.h - o.h,
            n: self.n - o.n,
        }
    }
}

/// The best split of a node.
struct Split {
    feature: usize,
    /// Present values in bins `≤ bin` go left.
    bin: usize,
    default_left: bool,
    gain: f64,
    left: Bin,
    right: Bin,
}

/// A node waiting to be split: its rows are `rows[start..end]`.
struct Pending {
    node: usize,
    start: usize,
    end: usize,
    depth: usize,
    hist: Vec<Bin>,
    sum: Bin,
}

struct Grower<'a> {
    data: &'a Binned,
    options: &'a GbmOptions,
    threads: usize,
}

impl Grower<'_> {
    fn value(&self, s: &Bin) -> f64 {
        -s.g / (s.h + self.options.l2) * self.options.learning_rate
    }

    fn score(&self, s: &Bin) -> f64 {
        s.g * s.g / (s.h + self.options.l2)
    }

    /// One tree on the sampled `rows` (reordered: each node's rows end up contiguous) with
    /// the rows' `(gradient, hessian)`; also each node's split bin.
    fn grow(&self, gh: &[(f64, f64)], rows: &mut [u32]) -> (Tree, Vec<u8>) {
        let mut sum = Bin::default();
        for &r in rows.iter() {
            let (g, h) = gh[r as usize];
            sum.add(&Bin { g, h, n: 1 });
        }
        let mut tree = Tree::with_root(self.value(&sum));
        let mut split_bins = vec![0u8];
        let mut scratch = Vec::new();
        let mut stack = vec![Pending {
            node: 0,
            start: 0,
            end: rows.len(),
            depth: 0,
            hist: self.histogram(&rows[..], gh),
            sum,
        }];
        let min_leaf = self.options.min_samples_leaf;
        while let Some(p) = stack.pop() {
            if p.depth >= self.options.max_depth || p.sum.n < 2 * min_leaf {
                continue;
            }
            let Some(s) = self.best_split(&p.hist, &p.sum) else {
                continue;
            };
            let threshold = self.data.cuts[s.feature]
                .get(s.bin)
                .copied()
                .unwrap_or(f64::MAX);
            let (l, r) = tree.split(
                p.node,
                &s,
                threshold,
                (self.value(&s.left), self.value(&s.right)),
            );
            split_bins[p.node] = s.bin as u8;
            split_bins.extend([0, 0]);
            let mid = self.partition(
                &tree,
                &split_bins,
                p.node,
                &mut rows[p.start..p.end],
                &mut scratch,
            ) + p.start;
            debug_assert_eq!(mid - p.start, s.left.n);
            // the smaller child's histogram from its rows, the larger's by subtraction
            let mut big = p.hist;
            let small_left = s.left.n <= s.right.n;
            let small_rows = if small_left {
                &rows[p.start..mid]
            } else {
                &rows[mid..p.end]
            };
            let small = self.histogram(small_rows, gh);
            for (b, s) in big.iter_mut().zip(&small) {
                *b = b.minus(s);
            }
            let (left_hist, right_hist) = if small_left {
                (small, big)
            } else {
                (big, small)
            };
            let depth = p.depth + 1;
            // left is popped first: nodes are numbered depth first
            stack.push(Pending {
                node: r,
                start: mid,
                end: p.end,
                depth,
                hist: right_hist,
                sum: s.right,
            });
            stack.push(Pending {
                node: l,
                start: p.start,
                end: mid,
                depth,
                hist: left_hist,
                sum: s.left,
            });
        }
        (tree, split_bins)
    }

    /// Moves the rows going left at `node` to the front (keeping their order); returns how
    /// many.
    fn partition(
        &self,
        tree: &Tree,
        split_bins: &[u8],
        node: usize,
        rows: &mut [u32],
        scratch: &mut Vec<u32>,
    ) -> usize {
        scratch.clear();
        let mut left = 0;
        for k in 0..rows.len() {
            let r = rows[k];
            if self.data.goes_left(tree, split_bins, node, r as usize) {
                rows[left] = r;
                left += 1;
            } else {
                scratch.push(r);
            }
        }
        rows[left..].copy_from_slice(scratch);
        left
    }

    /// The `(G, H, count)` of each feature's bins over `rows`, features shared among the
    /// threads.
    fn histogram(&self, rows: &[u32], gh: &[(f64, f64)]) -> Vec<Bin> {
        let d = self.data;
        let features = d.cuts.len();
        let mut hist = vec![Bin::default(); d.slots()];
        // the rows' gradients in row order: every feature's pass then reads them in sequence
        let gh: Vec<(f64, f64)> = rows.iter().map(|&r| gh[r as usize]).collect();
        let gh = &gh[..];
        if self.threads <= 1 || rows.len() * features < PARALLEL_WORK {
            self.fill(0..features, &mut hist, rows, gh);
            return hist;
        }
        std::thread::scope(|s| {
            let mut rest = &mut hist[..];
            let mut taken = 0;
            for g in split_range(features, self.threads) {
                let (part, tail) = std::mem::take(&mut rest).split_at_mut(d.offsets[g.end] - taken);
                taken = d.offsets[g.end];
                rest = tail;
                s.spawn(move || self.fill(g, part, rows, gh));
            }
        });
        hist
    }

    /// Histograms of the features `range` into `hist` (which starts at the first one's
    /// slots); `gh[k]` is the gradient and hessian of `rows[k]`.
    fn fill(&self, range: Range<usize>, hist: &mut [Bin], rows: &[u32], gh: &[(f64, f64)]) {
        let d = self.data;
        let base = d.offsets[range.start];
        for j in range {
            let col = d.column(j);
            let h = &mut hist[d.offsets[j] - base..d.offsets[j + 1] - base];
            for (&r, &(g, hh)) in rows.iter().zip(gh) {
                let b = &mut h[col[r as usize] as usize];
                b.g += g;
                b.h += hh;
                b.n += 1;
            }
        }
    }

    /// The split of largest positive gain with `min_samples_leaf` rows each side.
    fn best_split(&self, hist: &[Bin], sum: &Bin) -> Option<Split> {
        let d = self.data;
        let min_leaf = self.options.min_samples_leaf;
        let parent = self.score(sum);
        let mut best: Option<Split> = None;
        for j in 0..d.cuts.len() {
            let h = &hist[d.offsets[j]..d.offsets[j + 1]];
            let (present, missing) = h.split_at(h.len() - 1);
            let missing = missing[0];
            let mut left = Bin::default();
            for (b, bin) in present.iter().enumerate() {
                left.add(bin);
                for default_left in [false, true] {
                    if default_left && missing.n == 0 {
                        continue;
                    }
                    let mut l = left;
                    if default_left {
                        l.add(&missing);
                    }
                    let r = sum.minus(&l);
                    if l.n < min_leaf || r.n < min_leaf {
                        continue;
                    }
                    let (sl, sr) = (self.score(&l), self.score(&r));
                    let gain = sl + sr - parent;
                    // a gain within rounding of the scores is no gain
                    let noise = 1e-12 * (sl + sr + parent);
                    if gain > noise && best.as_ref().is_none_or(|s| gain > s.gain) {
                        best = Some(Split {
                            feature: j,
                            bin: b,
                            // no missing rows here: missing values follow the majority
                            default_left: if missing.n == 0 {
                                l.n >= r.n
                            } else {
                                default_left
                            },
                            gain,
                            left: l,
                            right: r,
                        });
                    }
                }
            }
        }
        best
    }
}

/// SplitMix64 (Steele, Lea and Flood 2014): a small deterministic generator for the row
/// subsamples.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uniform(rng: &mut SplitMix64, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * rng.next_f64()
    }

    /// `y = (x0 > 0) xor (x1 > 0)` with 5 % of the labels flipped; eight more features of
    /// noise, all uniform on (−1, 1).
    fn xor(n: usize, seed: u64) -> (Vec<Vec<f64>>, Vec<f64>) {
        let mut rng = SplitMix64(seed);
        let mut x = Vec::with_capacity(n);
        let mut y = Vec::with_capacity(n);
        for _ in 0..n {
            let row: Vec<f64> = (0..10).map(|_| uniform(&mut rng, -1.0, 1.0)).collect();
            let label = (row[0] > 0.0) != (row[1] > 0.0);
            let flip = rng.next_f64() < 0.05;
            y.push(if label != flip { 1.0 } else { 0.0 });
            x.push(row);
        }
        (x, y)
    }

    /// `y = 3 sin(x0) + x1²`, noise-free, with three features of noise, all uniform on
    /// (−2, 2).
    fn wave(n: usize, seed: u64) -> (Vec<Vec<f64>>, Vec<f64>) {
        let mut rng = SplitMix64(seed);
        let x: Vec<Vec<f64>> = (0..n)
            .map(|_| (0..5).map(|_| uniform(&mut rng, -2.0, 2.0)).collect())
            .collect();
        let y = x.iter().map(|r| 3.0 * r[0].sin() + r[1] * r[1]).collect();
        (x, y)
    }

    fn accuracy(g: &Gbm, x: &[Vec<f64>], y: &[f64]) -> f64 {
        let right = x
            .iter()
            .zip(y)
            .filter(|(r, t)| (g.predict(r) >= 0.5) == (**t == 1.0))
            .count();
        right as f64 / y.len() as f64
    }

    fn rmse(g: &Gbm, x: &[Vec<f64>], y: &[f64]) -> f64 {
        let sse: f64 = x
            .iter()
            .zip(y)
            .map(|(r, t)| (g.predict(r) - t).powi(2))
            .sum();
        (sse / y.len() as f64).sqrt()
    }

    #[test]
    fn learns_an_interaction_a_linear_model_cannot() {
        let (x, y) = xor(4000, 1);
        let (tx, ty) = xor(2000, 2);
        let g = fit(&x, &y, Loss::Logistic, &GbmOptions::default()).expect("fit");
        let acc = accuracy(&g, &tx, &ty);
        // no linear boundary separates xor: the majority class is as good as a linear model
        let ones = ty.iter().sum::<f64>() / ty.len() as f64;
        let majority = ones.max(1.0 - ones);
        println!("xor: held-out accuracy {acc}, majority {majority}");
        assert!(acc >= 0.9, "held-out accuracy {acc}");
        assert!(majority < 0.55, "majority share {majority}");
        // the gain is in the two features of the interaction
        let imp = g.feature_importance();
        let noise = imp[2..].iter().cloned().fold(0.0, f64::max);
        assert!(imp[0] > 2.0 * noise && imp[1] > 2.0 * noise, "{imp:?}");
    }

    #[test]
    fn regresses_a_smooth_surface() {
        let (x, y) = wave(5000, 3);
        let (tx, ty) = wave(2000, 4);
        let g = fit(&x, &y, Loss::Squared, &GbmOptions::default()).expect("fit");
        let e = rmse(&g, &tx, &ty);
        let sd = {
            let m = ty.iter().sum::<f64>() / ty.len() as f64;
            (ty.iter().map(|t| (t - m).powi(2)).sum::<f64>() / ty.len() as f64).sqrt()
        };
        println!("3 sin(x0) + x1²: held-out RMSE {e}, sd of y {sd}");
        assert!(e < 0.15, "held-out RMSE {e} (sd of y {sd})");
    }

    #[test]
    fn contributions_add_up_to_the_margin() {
        let (x, y) = xor(2000, 5);
        let logistic = fit(&x, &y, Loss::Logistic, &GbmOptions::default()).expect("fit");
        // the interaction's features carry the explanation of an xor row
        let c = logistic.contributions(&[0.5, -0.5, 0.3, -0.3, 0.1, -0.1, 0.7, -0.7, 0.2, 0.0]);
        assert!(
            c[0].abs() + c[1].abs() > 2.0 * c[2..].iter().map(|v| v.abs()).sum::<f64>(),
            "{c:?}"
        );
        let (x, y) = wave(2000, 6);
        let squared = fit(&x, &y, Loss::Squared, &GbmOptions::default()).expect("fit");
        let (mut rows, _) = wave(200, 7);
        rows[0][0] = f64::NAN;
        rows[1] = vec![f64::NAN; 5];
        for g in [&logistic, &squared] {
            let rows: Vec<Vec<f64>> = rows
                .iter()
                .map(|r| {
                    r.iter()
                        .chain(&r[..])
                        .take(g.n_features())
                        .copied()
                        .collect()
                })
                .collect();
            for r in &rows {
                let c = g.contributions(r);
                let sum = g.bias() + c.iter().sum::<f64>();
                let raw = g.predict_raw(r);
                assert!((sum - raw).abs() < 1e-9, "{sum} vs {raw}");
            }
        }
    }

    #[test]
    fn a_json_round_trip_predicts_the_same() {
        let (x, y) = wave(3000, 8);
        let g = fit(&x, &y, Loss::Squared, &GbmOptions::default()).expect("fit");
        let json = serde_json::to_string(&g).expect("serialise");
        let back: Gbm = serde_json::from_str(&json).expect("deserialise");
        assert!(back == g, "the model read back differs");
        let (tx, _) = wave(500, 9);
        for r in &tx {
            assert_eq!(back.predict(r).to_bits(), g.predict(r).to_bits());
        }
        // a child before its parent would loop: rejected
        let mut v: serde_json::Value = serde_json::from_str(&json).expect("json");
        v["trees"][0]["left"][0] = serde_json::json!(0u32);
        v["trees"][0]["right"][0] = serde_json::json!(0u32);
        assert!(
            serde_json::from_value::<Gbm>(v.clone()).is_ok(),
            "a root leaf is a tree"
        );
        v["trees"][0]["left"][1] = serde_json::json!(1u32);
        let err = serde_json::from_value::<Gbm>(v).expect_err("a cycle");
        assert!(err.to_string().contains("out of order"), "{err}");
    }

    #[test]
    fn missing_values_take_the_learned_direction() {
        // y = x0 when present; a missing x0 means y = 5, which no present value gives
        let mut rng = SplitMix64(10);
        let mut x = Vec::new();
        let mut y = Vec::new();
        for _ in 0..3000 {
            let v = uniform(&mut rng, -1.0, 1.0);
            let missing = rng.next_f64() < 0.3;
            x.push(vec![
                if missing { f64::NAN } else { v },
                uniform(&mut rng, -1.0, 1.0),
            ]);
            y.push(if missing { 5.0 } else { v });
        }
        let g = fit(&x, &y, Loss::Squared, &GbmOptions::default()).expect("fit");
        let p = g.predict(&[f64::NAN, 0.3]);
        println!(
            "missing x0 (y = 5): {p}; x0 = 0.5: {}",
            g.predict(&[0.5, 0.3])
        );
        assert!((p - 5.0).abs() < 0.2, "missing x0 predicts {p}");
        assert!((g.predict(&[0.5, 0.3]) - 0.5).abs() < 0.2);
        // every feature missing: no panic, the same answer twice
        let all = [f64::NAN, f64::NAN];
        assert!(g.predict(&all).is_finite());
        assert_eq!(g.predict(&all).to_bits(), g.predict(&all).to_bits());
        // a model trained without missing values still routes them
        let (x, y) = wave(1000, 11);
        let g = fit(&x, &y, Loss::Squared, &GbmOptions::default()).expect("fit");
        let row = [f64::NAN, 1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY];
        assert!(g.predict(&row).is_finite());
        assert_eq!(g.predict(&row).to_bits(), g.predict(&row).to_bits());
    }

    #[test]
    fn the_seed_fixes_the_model() {
        let (x, y) = xor(2000, 12);
        let options = GbmOptions {
            trees: 30,
            ..GbmOptions::default()
        };
        let a = fit(&x, &y, Loss::Logistic, &options).expect("fit");
        let b = fit(&x, &y, Loss::Logistic, &options).expect("fit");
        assert_eq!(a, b);
        let c = fit(&x, &y, Loss::Logistic, &GbmOptions { seed: 1, ..options }).expect("fit");
        assert_ne!(a, c, "another seed draws other subsamples");
    }

    #[test]
    fn early_stopping_keeps_the_best_trees() {
        // y = x0 + noise of sd ≈ 1.2: large steps overfit the noise quickly
        let mut rng = SplitMix64(13);
        let mut data = |n: usize| {
            let x: Vec<Vec<f64>> = (0..n)
                .map(|_| (0..5).map(|_| uniform(&mut rng, -1.0, 1.0)).collect())
                .collect();
            let y: Vec<f64> = x
                .iter()
                .map(|r| r[0] + 2.0 * uniform(&mut rng, -1.0, 1.0))
                .collect();
            (x, y)
        };
        let (x, y) = data(1000);
        let (vx, vy) = data(1000);
        let options = GbmOptions {
            trees: 500,
            learning_rate: 0.3,
            min_samples_leaf: 5,
            ..GbmOptions::default()
        };
        let (g, curve) =
            fit_with_validation(&x, &y, Loss::Squared, &options, &vx, &vy).expect("fit");
        println!(
            "early stopping: {} trees kept, validation MSE {} (mean alone {})",
            curve.best_trees, curve.loss[curve.best_trees], curve.loss[0]
        );
        assert!(
            curve.best_trees > 0 && curve.best_trees < 100,
            "{}",
            curve.best_trees
        );
        assert_eq!(g.n_trees(), curve.best_trees);
        assert_eq!(
            curve.loss.len(),
            curve.best_trees + options.early_stopping_rounds + 1
        );
        let min = curve.loss.iter().cloned().fold(f64::INFINITY, f64::min);
        assert_eq!(curve.loss[curve.best_trees], min);
        assert!(min < curve.loss[0], "the trees beat the mean");
    }

    #[test]
    fn bad_input_is_an_error() {
        let x = vec![vec![0.0, 1.0], vec![1.0, 0.0]];
        let o = GbmOptions::default();
        let e = fit(&x, &[0.0], Loss::Squared, &o).expect_err("lengths");
        assert!(e.contains("2 rows but 1 targets"), "{e}");
        let e = fit(&x, &[0.0, 2.0], Loss::Logistic, &o).expect_err("label");
        assert!(e.contains("0 or 1"), "{e}");
        let e = fit(&x, &[0.0, f64::NAN], Loss::Squared, &o).expect_err("target");
        assert!(e.contains("target 1"), "{e}");
        let ragged = vec![vec![0.0, 1.0], vec![1.0]];
        assert!(fit(&ragged, &[0.0, 1.0], Loss::Squared, &o).is_err());
        let e = fit(
            &x,
            &[0.0, 1.0],
            Loss::Squared,
            &GbmOptions {
                bins: 256,
                ..o.clone()
            },
        )
        .expect_err("bins");
        assert!(e.contains("gbm.bins"), "{e}");
        assert!(fit::<Vec<f64>>(&[], &[], Loss::Squared, &o).is_err());
        // two rows cannot make leaves of 20: single-leaf trees of zero gradient
        let all_rows = GbmOptions {
            subsample: 1.0,
            ..o.clone()
        };
        let g = fit(&x, &[1.0, 3.0], Loss::Squared, &all_rows).expect("fit");
        assert!((g.predict(&[0.0, 0.0]) - 2.0).abs() < 1e-12);
        let opts: GbmOptions = serde_json::from_str(r#"{"trees": 10}"#).expect("defaults");
        assert_eq!(opts, GbmOptions { trees: 10, ..o });
        assert!(serde_json::from_str::<GbmOptions>(r#"{"tree": 10}"#).is_err());
    }

    #[test]
    fn quantile_cuts_separate_distinct_values() {
        assert_eq!(quantile_cuts(vec![3.0, 1.0, 2.0, 1.0], 64), vec![1.5, 2.5]);
        // heavy ties: at most bins − 1 cuts, each between two values
        let mut v = vec![0.0; 500];
        v.extend((1..=500).map(f64::from));
        let c = quantile_cuts(v, 4);
        assert_eq!(c.len(), 3);
        assert_eq!(c[0], 0.5);
        assert!(c.windows(2).all(|w| w[0] < w[1]));
        assert!(quantile_cuts(vec![7.0; 10], 4).is_empty());
    }

    /// `cargo test --release -p fleetpulse-analytics --lib gbm::tests::timing -- --ignored --nocapture`
    #[test]
    #[ignore = "a timing run: 200k rows × 100 features × 200 trees"]
    fn timing() {
        let (n, f) = (200_000, 100);
        let mut rng = SplitMix64(14);
        let x: Vec<Vec<f64>> = (0..n)
            .map(|_| (0..f).map(|_| uniform(&mut rng, -1.0, 1.0)).collect())
            .collect();
        let y: Vec<f64> = x
            .iter()
            .map(|r| {
                let m = 2.0 * r[0] * r[1] + r[2] - r[3].abs() + 0.5 * r[4];
                if uniform(&mut rng, 0.0, 1.0) < sigmoid(3.0 * m) {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        for loss in [Loss::Logistic, Loss::Squared] {
            let t = std::time::Instant::now();
            let g = fit(&x, &y, loss, &GbmOptions::default()).expect("fit");
            let leaves: usize = g.trees().iter().map(|t| t.len().div_ceil(2)).sum();
            println!(
                "{loss:?}: {n} rows × {f} features × {} trees ({leaves} leaves) in {:.2} s on {} threads",
                g.n_trees(),
                t.elapsed().as_secs_f64(),
                std::thread::available_parallelism().map_or(1, |n| n.get())
            );
        }
    }
}
