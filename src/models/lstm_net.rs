//! The LSTM network on IMDb.

use crate::dp_model;

/// The founding paper's LSTM network for IMDb sentiment: 256 token ids → embedding 10,004×100 → LSTM
/// with 100 hidden units over the 256 steps → mean of the whole output sequence → linear 100 → 2;
/// 1,081,002 parameters.
///
/// Subramani, Vadivelu, Kamath, "Enabling Fast Differentially Private SGD via Just-in-Time Compilation
/// and Vectorization" (NeurIPS 2021), appendix B (the LSTM model on IMDb); the LSTM is Hochreiter and
/// Schmidhuber (1997) with PyTorch's gate order i, f, g, o and zero initial state.
///
/// Parameters use PyTorch's names: `lstm.weight_ih_l0` `[400, 100]`, `lstm.weight_hh_l0` `[400, 100]`
/// and ONE bias per gate, `lstm.bias_ih_l0` `[400]`: it is PyTorch's `bias_ih_l0 + bias_hh_l0` (the two
/// vectors only ever appear summed), which is why the model has 400 fewer parameters than PyTorch's
/// `nn.LSTM` counts. The LSTM's weights and bias are one parameter group; each weight is a layer applied
/// at 256 positions, with its per-example norm strategy chosen by the planner (`LstmNet::describe()`).
#[dp_model(input = tokens(len = 256, vocab = 10004), loss = cross_entropy(classes = 2))]
pub struct LstmNet {
    #[layer(embedding(dim = 100))]
    embedding: Embedding,
    #[layer(lstm(hidden = 100), mean)]
    lstm: Lstm,
    #[layer(linear(out = 2))]
    fc: Linear,
}
