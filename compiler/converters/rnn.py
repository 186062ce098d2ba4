"""RNN, GRU and LSTM, unrolled over a sequence length fixed at compile time.

The input projection X·Wᵀ + Wb of every step is one matmul; each step then adds H·Rᵀ + Rb and
applies the gates. Steps past an entry's `sequence_lens` keep its state and emit zeros, which
is also what makes the reverse direction start at each entry's own last step.
"""

from __future__ import annotations

from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from ..errors import ModelError
from . import register, text_attr
from .math_ops import elu
from .static import static_dim

op = relax.op
_TAKES_ALPHA = {"affine", "leakyrelu", "thresholdedrelu", "scaledtanh", "hardsigmoid", "elu"}
_TAKES_BETA = {"affine", "scaledtanh", "hardsigmoid"}


def _activation(bb, name: str, alpha: float | None, beta: float | None):
    """ONNX's recurrent activation functions, as functions of a Relax expression (normalised
    first: the constants take its dtype, which an unnormalised call does not know yet)."""

    def c(value, like):
        return relax.const(value, like.ty.dtype)

    table = {
        "sigmoid": lambda x: op.sigmoid(x),
        "tanh": lambda x: op.tanh(x),
        "relu": lambda x: op.nn.relu(x),
        "affine": lambda x: op.add(op.multiply(x, c(alpha, x)), c(beta, x)),
        "leakyrelu": lambda x: op.nn.leakyrelu(x, alpha if alpha is not None else 0.01),
        "thresholdedrelu": lambda x: op.where(
            op.greater(x, c(alpha if alpha is not None else 1.0, x)), x, op.zeros_like(x)
        ),
        "scaledtanh": lambda x: op.multiply(op.tanh(op.multiply(x, c(beta, x))), c(alpha, x)),
        "hardsigmoid": lambda x: op.clip(
            op.add(
                op.multiply(x, c(alpha if alpha is not None else 0.2, x)),
                c(beta if beta is not None else 0.5, x),
            ),
            0,
            1,
        ),
        "elu": lambda x: elu(x, alpha if alpha is not None else 1.0, str(x.ty.dtype)),
        "softsign": lambda x: op.divide(x, op.add(op.abs(x), c(1.0, x))),
        "softplus": lambda x: op.log(op.add(op.exp(x), c(1.0, x))),
    }
    key = name.lower()
    if key not in table:
        raise ModelError(f"recurrent activation {name!r} is not supported")
    return lambda x: table[key](bb.normalize(x))


class _Recurrent(OnnxOpConverter):
    """Shared unrolling; subclasses give the default activations and one step."""

    default_activations: tuple[str, ...] = ()
    op_name = ""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        inputs = list(inputs) + [None] * (8 - len(inputs))
        x, w, r, b, seq_lens = inputs[:5]
        layout = attr.get("layout", 0)
        if layout:
            x = op.permute_dims(x, [1, 0, 2])
        steps, batch = (static_dim(d, cls.op_name) for d in bb.normalize(x).ty.shape.values[:2])
        hidden = int(attr["hidden_size"])
        direction = text_attr(attr, "direction", "forward")
        dirs = 2 if direction == "bidirectional" else 1
        acts = cls._activations(bb, attr, dirs)
        outputs_y, outputs_state = [], [[] for _ in range(cls.state_count())]
        for d in range(dirs):
            reverse = direction == "reverse" or d == 1
            state0 = [
                bb.normalize(_init(inputs[5 + i], d, batch, hidden, x))
                for i in range(cls.state_count())
            ]
            ys, final = cls._run_direction(
                bb,
                x,
                _pick(w, d),
                _pick(r, d),
                _pick(b, d) if b is not None else None,
                seq_lens,
                state0,
                (steps, hidden, reverse),
                acts[d],
                attr,
                inputs,
                d,
            )
            outputs_y.append(_stack(ys, 0))  # [T, B, H]
            for i, s in enumerate(final):
                outputs_state[i].append(s)
        y = _stack(outputs_y, 1)  # [T, dirs, B, H]
        states = [_stack(s, 0) for s in outputs_state]  # [dirs, B, H]
        if layout:
            y = op.permute_dims(y, [2, 0, 1, 3])
            states = [op.permute_dims(s, [1, 0, 2]) for s in states]
        return relax.Tuple([y, *states])

    @classmethod
    def state_count(cls) -> int:
        return 1

    @classmethod
    def _activations(cls, bb, attr, dirs: int):
        names = [n.decode() for n in attr.get("activations", ())]
        names = names or list(cls.default_activations) * dirs
        # alphas and betas are consumed in order by the functions that take one
        alphas = iter(attr.get("activation_alpha", ()))
        betas = iter(attr.get("activation_beta", ()))
        funcs = []
        for name in names:
            alpha = next(alphas, None) if name.lower() in _TAKES_ALPHA else None
            beta = next(betas, None) if name.lower() in _TAKES_BETA else None
            funcs.append(_activation(bb, name, alpha, beta))
        per = len(cls.default_activations)
        return [funcs[d * per : (d + 1) * per] for d in range(dirs)]

    @classmethod
    def _run_direction(cls, bb, x, w, r, b, seq_lens, state, dims, acts, attr, inputs, d):
        steps, hidden, reverse = dims
        wb, rb = (None, None)
        if b is not None:
            parts = bb.emit(op.split(b, 2, axis=0))
            wb, rb = relax.TupleGetItem(parts, 0), relax.TupleGetItem(parts, 1)
        xw = op.matmul(x, op.permute_dims(w))  # [T, B, g*H]
        if wb is not None:
            xw = op.add(xw, wb)
        xw = bb.emit(xw)
        rt = bb.emit(op.permute_dims(r))  # [H, g*H]
        ys = [None] * steps
        order = range(steps - 1, -1, -1) if reverse else range(steps)
        extra = cls._extra(bb, inputs, attr, d, hidden)
        for t in order:
            xt = bb.normalize(op.squeeze(op.strided_slice(xw, [0], [t], [t + 1]), [0]))
            new = cls._step(bb, xt, state, rt, rb, acts, attr, hidden, extra)
            if seq_lens is not None:
                live = op.less(relax.const(t, seq_lens.ty.dtype), seq_lens)
                live = op.expand_dims(live, [1])
                ys[t] = bb.emit(op.where(live, new[0], op.zeros_like(new[0])))
                new = [bb.emit(op.where(live, n, s)) for n, s in zip(new, state)]
            else:
                ys[t] = new[0]
            state = new
        return ys, state

    @classmethod
    def _extra(cls, bb, inputs, attr, d, hidden):
        return None


def _clip(x, attr):
    if "clip" not in attr:
        return x
    limit = float(attr["clip"])
    return op.clip(x, -limit, limit)


def _gate(xt, h, rt, rb, index, hidden):
    """Slice `index` of the packed gates of X·Wᵀ (+Wb) + H·Rᵀ (+Rb)."""
    begin, end = index * hidden, (index + 1) * hidden
    xg = op.strided_slice(xt, [1], [begin], [end])
    hg = op.matmul(h, op.strided_slice(rt, [1], [begin], [end]))
    if rb is not None:
        hg = op.add(hg, op.strided_slice(rb, [0], [begin], [end]))
    return xg, hg


@register("RNN")
class RNN(_Recurrent):
    default_activations = ("Tanh",)
    op_name = "RNN"

    @classmethod
    def _step(cls, bb, xt, state, rt, rb, acts, attr, hidden, extra):
        xg, hg = _gate(xt, state[0], rt, rb, 0, hidden)
        return [bb.emit(acts[0](_clip(op.add(xg, hg), attr)))]


@register("GRU")
class GRU(_Recurrent):
    default_activations = ("Sigmoid", "Tanh")
    op_name = "GRU"

    @classmethod
    def _step(cls, bb, xt, state, rt, rb, acts, attr, hidden, extra):
        f, gact = acts
        h = state[0]
        xz, hz = _gate(xt, h, rt, rb, 0, hidden)
        xr, hr = _gate(xt, h, rt, rb, 1, hidden)
        z = bb.emit(f(_clip(op.add(xz, hz), attr)))
        rgate = bb.emit(f(_clip(op.add(xr, hr), attr)))
        xh = op.strided_slice(xt, [1], [2 * hidden], [3 * hidden])
        rh = op.strided_slice(rt, [1], [2 * hidden], [3 * hidden])
        rbh = op.strided_slice(rb, [0], [2 * hidden], [3 * hidden]) if rb is not None else None
        if attr.get("linear_before_reset", 0):
            hh = op.matmul(h, rh)
            hh = op.add(hh, rbh) if rbh is not None else hh
            pre = op.add(xh, op.multiply(rgate, hh))
        else:
            hh = op.matmul(op.multiply(rgate, h), rh)
            pre = op.add(xh, op.add(hh, rbh) if rbh is not None else hh)
        cand = bb.emit(gact(_clip(pre, attr)))
        one = relax.const(1.0, h.ty.dtype)
        return [bb.emit(op.add(op.multiply(op.subtract(one, z), cand), op.multiply(z, h)))]


@register("LSTM")
class LSTM(_Recurrent):
    default_activations = ("Sigmoid", "Tanh", "Tanh")
    op_name = "LSTM"

    @classmethod
    def state_count(cls) -> int:
        return 2

    @classmethod
    def _extra(cls, bb, inputs, attr, d, hidden):
        peep = inputs[7] if len(inputs) > 7 else None
        if peep is None:
            return None
        p = _pick(peep, d)
        return [
            bb.emit(op.strided_slice(p, [0], [i * hidden], [(i + 1) * hidden])) for i in range(3)
        ]  # i, o, f

    @classmethod
    def _step(cls, bb, xt, state, rt, rb, acts, attr, hidden, extra):
        f, gact, hact = acts
        h, c = state
        pre = [op.add(*_gate(xt, h, rt, rb, i, hidden)) for i in range(4)]  # i, o, f, c
        if extra is not None:
            pre[0] = op.add(pre[0], op.multiply(extra[0], c))
            pre[2] = op.add(pre[2], op.multiply(extra[2], c))
        i_gate = bb.emit(f(_clip(pre[0], attr)))
        f_gate = bb.emit(f(_clip(pre[2], attr)))
        if attr.get("input_forget", 0):
            one = relax.const(1.0, xt.ty.dtype)
            f_gate = bb.emit(op.subtract(one, i_gate))
        cand = bb.emit(gact(_clip(pre[3], attr)))
        c_new = bb.emit(op.add(op.multiply(f_gate, c), op.multiply(i_gate, cand)))
        if extra is not None:
            pre[1] = op.add(pre[1], op.multiply(extra[1], c_new))
        o_gate = bb.emit(f(_clip(pre[1], attr)))
        h_new = bb.emit(op.multiply(o_gate, hact(c_new)))
        return [h_new, c_new]


def _stack(tensors, axis: int):
    """relax.op.stack, spelled as expand_dims + concat: TVM 0.27's ConvertLayout pass (which
    mlc runs on CPU targets) fails on stack with "Index -1 out of bounds"."""
    return op.concat([op.expand_dims(t, [axis]) for t in tensors], axis=axis)


def _pick(tensor, direction: int):
    """tensor[direction] of a [num_directions, ...] weight."""
    return op.squeeze(op.strided_slice(tensor, [0], [direction], [direction + 1]), [0])


def _init(state, direction: int, batch: int, hidden: int, like):
    if state is None:
        return op.zeros((batch, hidden), like.ty.dtype)
    return _pick(state, direction)
