"""Same-process A/B of the speed tricks in the training step and the samplers, against their plain PyTorch forms.

    python scripts/ab_tricks.py --size cpu   [--rounds 6] [--json out.json]
    python scripts/ab_tricks.py --size small [--rounds 3] [--batch 8]

Each trick is timed with its plain form swapped in and out, alternately, in one process (the median of `rounds`
alternations of each), on the bench's step of the models it serves: the trainer's full step (loss, backward, clipping,
AdamW, EMA) for training tricks, `model.sample` for sampler tricks. The gain is the plain form's time over the
trick's, less one. A trick stays where it buys at least 5 % at the cpu preset's width or at the paper's (`small`).
"""
import argparse, contextlib, inspect, json, math, statistics, sys, textwrap, time

import torch

from hybrid_dlm import backbone, chain, draws, models as models_mod
from hybrid_dlm.bench import bench_models
from hybrid_dlm.forward import argmax_last, draw_uniform, seeded_generator, stratified_times
from hybrid_dlm.models import AR
from hybrid_dlm.runtime import apply_runtime
from hybrid_dlm.train import EMA, TrainConfig, make_optimizer


# ---- the plain forms -------------------------------------------------------------------------------------------
def plain_head_pass():
    "The head's chunk loop with its logits made plainly (addmm, then shifted by each row's maximum, then exp)."
    src = textwrap.dedent(inspect.getsource(backbone._head_pass))
    old = "            l2, m = log2_logits(hc, W, b, buf[:e - s], bounds)\n            p = l2.exp2_()"
    assert old in src, 'the head pass changed: update the plain form'
    new = ("            l = torch.mm(hc, W.T, out=buf[:e - s]) if b is None else torch.addmm(b, hc, W.T, out=buf[:e - s])\n"
           "            m = l.amax(dim=1)\n"
           "            p = l.sub_(m[:, None]).exp_()")
    ns = dict(vars(backbone))
    exec(src.replace(old, new).replace('def _head_pass(', 'def _plain_head_pass('), ns)
    return ns['_plain_head_pass']


@torch.no_grad()
def dot_clip(params, max_norm: float):
    "The removed hand-written clipping: one dot product per tensor for the norm, one foreach scaling."
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.stack([torch.dot(g.reshape(-1), g.reshape(-1)).float() for g in grads]).sum().sqrt()
    torch._foreach_mul_(grads, (max_norm / (norm + 1e-6)).clamp(max=1.0))
    return norm


CLIP = {'fn': torch.nn.utils.clip_grad_norm_}          # the trainer's clipping, as the step below calls it


def race(v, generator):
    "The removed exponential race: argmax v / E, E = -log U (Gumbel-max over log v from the same uniforms)."
    e = draw_uniform(v.shape, generator, v.device, torch.float64).log_().neg_()
    return argmax_last(v.double() / e)


def plain_nucleus(logits, top_p: float, bins=None):
    "The nucleus by a full stable sort and a cumulative sum."
    ranked, order = logits.sort(dim=-1, descending=True, stable=True)
    p = (ranked - ranked[:, :1]).double().exp()
    keep = (p.cumsum(-1) - p) / p.sum(-1, keepdim=True) < top_p
    return logits.masked_fill(~torch.zeros_like(keep).scatter(-1, order, keep), -math.inf)


def log2_ar_sample(self, n, steps=None, seq_len=None, generator=None, progress=False, return_states=False,
                   given=None, temperature=1., top_p=1., stats=None, **kw):
    """The removed AR sampler: logits less a shift known before they are made (the Cauchy-Schwarz bound of
    `log2_logits`), in units of log 2, whose `exp2` in place are the weights of the raced draw."""
    L, dev = seq_len or self.cfg.seq_len, self.device
    x = torch.zeros(n, L, dtype=torch.long, device=dev)
    with torch.no_grad():
        cache = self.net.new_cache(L)
        inp = torch.full((n, 1), self.cfg.vocab_size, dtype=torch.long, device=dev)
        W, b = self.head.weight.float(), self.head.bias.float()
        bounds, buf = backbone.head_bounds(W, b), torch.empty(n, self.cfg.vocab_size, device=dev)
        for i in range(L):
            h = self.net.step(inp, cache)[:, -1].float()
            l2 = backbone.log2_logits(h, W, b, buf, bounds)[0]
            x[:, i] = (draws._weights_argmax(l2.exp2_(), generator) if temperature == 1 and top_p == 1 else
                       draws.draw_from_logits(l2.mul_(math.log(2)), generator, temperature, top_p, overwrite=True))
            inp = x[:, i:i + 1]
    return x


def plain_exp_masses(net, h, block: int, width: int = None):
    "Block masses and log Z from the whole rows of logits at once ([N, V] made, then shifted by each row's maximum)."
    with chain.network_call(): l = net.sample_logits(h).float()
    return draws.shifted_block_sums(l, block)


def plain_unmask_step():
    "The unmasking step that makes the whole rows of logits of the positions that unmask again, and draws from them."
    src = textwrap.dedent(inspect.getsource(chain.unmask_step))
    old = "if plain and mass is not None:"
    assert old in src, 'the unmasking step changed: update the plain form'
    ns = dict(vars(chain))
    exec(src.replace(old, "if False:").replace('def unmask_step(', 'def _plain_unmask_step('), ns)
    return ns['_plain_unmask_step']


@contextlib.contextmanager
def one_stage_draws():
    "Every draw one Gumbel-max over the whole row: no blocks of classes, and no draws from held block masses."
    with swapped(draws, 'gumbel_block', lambda n_classes, block=None: n_classes), \
         swapped(chain, 'unmask_step', plain_unmask_step()):
        yield


def tiled_argmax(q, keys, rows: int = None, cols: int = None):
    """The removed tiled argmax: tiles of 512 x 1024 scores that stay in cache; a tile's maxima from `amax`, and only
    the rows whose best score rose look for their index."""
    rows, cols = rows or 512, cols or 1024
    scores, out = q.new_empty(min(rows, len(q)) * min(cols, len(keys))), []
    for i in range(0, len(q), rows):
        qi, best, idx = q[i:i + rows], None, None
        for j in range(0, len(keys), cols):
            kj = keys[j:j + cols].to(q.dtype)
            s = torch.mm(qi, kj.T, out=scores[:len(qi) * len(kj)].view(len(qi), len(kj)))
            if best is None: best, idx = s.max(-1); continue
            v = s.amax(-1)
            rose = ((v > best) | (v.isnan() & ~best.isnan())).nonzero()[:, 0]
            if len(rose): best[rose], idx[rose] = v[rose], argmax_last(s[rose]) + j
        out.append(idx)
    return torch.cat(out) if out else q.new_zeros(0, dtype=torch.long)


@contextlib.contextmanager
def swapped_item(d, key, value):
    old = d[key]
    d[key] = value
    try: yield
    finally: d[key] = old


@contextlib.contextmanager
def swapped(obj, name, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try: yield
    finally: setattr(obj, name, old)


# ---- the steps ---------------------------------------------------------------------------------------------------
def train_step(model, batch, seq_len, device):
    "The trainer's step: loss per token, backward, clipping (`CLIP`, looked up at each call), AdamW, EMA."
    x = torch.randint(0, model.cfg.vocab_size, (batch, seq_len), generator=torch.Generator().manual_seed(0)).to(device)
    m, g = torch.ones_like(x, dtype=torch.bool), seeded_generator(1, device)
    opt, ema = make_optimizer(model, TrainConfig(lr=1e-6), device), EMA(model, 0.999)
    model.train()
    def step():
        loss = model.loss(x, m, stratified_times(batch, g, dtype=torch.float64).to(device), g).sum() / m.sum()
        loss.backward()
        CLIP['fn'](model.parameters(), 1.0)
        opt.step(); opt.zero_grad(set_to_none=True); ema.update(model)
    return step


def sample_step(model, batch, seq_len, steps, **kw):
    def step(): model.sample(batch, steps=steps, seq_len=seq_len, generator=seeded_generator(0), **kw)
    return step


def ab(step, swap, rounds: int, swap_installs: str = 'plain') -> dict:
    """Median seconds of `step` with the trick and with its plain form, alternating, after one warm-up each: `swap`
    installs the one the library does not use (`swap_installs`: the plain form, or a trick the library dropped)."""
    other = swap_installs
    current = 'trick' if other == 'plain' else 'plain'
    times = {'trick': [], 'plain': []}
    for r in range(rounds + 1):
        for name in (current, other) if r % 2 == 0 else (other, current):
            with (swap() if name == other else contextlib.nullcontext()):
                t0 = time.perf_counter(); step(); dt = time.perf_counter() - t0
            if r: times[name].append(dt)
    med = {k: statistics.median(v) for k, v in times.items()}
    return dict(trick_s=med['trick'], plain_s=med['plain'], gain=med['plain'] / med['trick'] - 1)


TRICKS = {   # name: (what it is, the step it serves, a swap, what the swap installs)
    'log2 logits in the head': ('the head pass: logits shifted by a Cauchy-Schwarz bound in log-2 units, exp2',
                                'train', lambda: swapped(backbone, '_head_pass', plain_head_pass()), 'plain'),
    'hand-written clipping': ('one dot product per tensor and a foreach scale, instead of clip_grad_norm_',
                              'train', lambda: swapped_item(CLIP, 'fn', dot_clip), 'trick'),
    'raced Gumbel draws': ('argmax w / E of the weights instead of Gumbel-max over log w',
                           'sample', lambda: swapped(draws, 'draw_categorical', race), 'trick'),
    'binned nucleus': ('the nucleus from logit bins, sorting one bin', 'sample top-p',
                       lambda: swapped(draws, 'nucleus', plain_nucleus), 'plain'),
    'AR log2 logits': ("the AR sampler's logits shifted in advance, in log-2 units", 'sample AR',
                       lambda: swapped(AR, 'sample', log2_ar_sample), 'trick'),
    'block masses in chunks': ('the sampler\'s block masses and log Z made a chunk of classes at a time, in cache',
                               'sample', lambda: swapped(chain, 'exp_masses', plain_exp_masses), 'plain'),
    'two-stage draws': ('a block of classes by its mass, then a class in it; the held block masses reused',
                        'sample', one_stage_draws, 'plain'),
    'tiled argmax': ('the rounding argmax in cache-sized tiles of the product', 'sample',
                     lambda: swapped(chain, 'argmax_product', tiled_argmax), 'trick'),
    'tiled argmax in training': ('the rounding argmax at the cut b, in cache-sized tiles of the product', 'train',
                                 lambda: swapped(chain, 'argmax_product', tiled_argmax), 'trick'),
    'table query groups': ("the table attention's queries split into one group per thread", 'train',
                           lambda: swapped(models_mod, 'query_groups', lambda device: 1), 'plain'),
}

SERVES = {'block masses in chunks': ('sedd', 'hybrid'), 'two-stage draws': ('ar', 'sedd', 'hybrid'),
          'tiled argmax': ('continuous', 'hybrid'), 'tiled argmax in training': ('hybrid',),
          'table query groups': ('continuous', 'hybrid')}                                   # the models that use it


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument('--size', default='cpu', help="backbone size: cpu (the cpu preset's) or small (the paper's)")
    p.add_argument('--rounds', type=int, default=5)
    p.add_argument('--batch', type=int, default=32)
    p.add_argument('--seq-len', type=int, default=64)
    p.add_argument('--sample-steps', type=int, default=8)
    p.add_argument('--models', nargs='+', default=['ar', 'sedd', 'continuous', 'hybrid'])
    p.add_argument('--tricks', nargs='+', default=list(TRICKS), help='the tricks to time (default: all)')
    p.add_argument('--json', default=None, help='write the rows here too')
    args = p.parse_args(argv)
    apply_runtime(device='cpu')
    models = bench_models(args.size, args.seq_len, 'cpu')
    rows = []
    for trick in args.tricks:
        what, phase, swap, installs = TRICKS[trick]
        for kind in args.models:
            model = models[kind]
            if phase == 'sample AR' and kind != 'ar': continue
            if trick in SERVES and kind not in SERVES[trick]: continue
            if phase == 'train': step = train_step(model, args.batch, args.seq_len, 'cpu')
            elif phase == 'sample top-p': step = sample_step(model, args.batch, args.seq_len, args.sample_steps, top_p=0.9)
            else: step = sample_step(model, args.batch, args.seq_len, args.sample_steps)
            r = dict(trick=trick, phase=phase, model=kind, size=args.size, **ab(step, swap, args.rounds, installs))
            rows.append(r)
            print(f"{trick:28s} {phase:13s} {kind:7s} trick {r['trick_s']:.3f} s  plain {r['plain_s']:.3f} s  "
                  f"gain {r['gain']:+.1%}", flush=True)
    if args.json: json.dump(rows, open(args.json, 'w'), indent=1)


if __name__ == '__main__':
    sys.exit(main())
