"""One response through the whole method, line by line: a worked example for teaching.

For demo tasks, one response that passes its tests and one that fails with a planted slip (sampled from the
SFT policy at a fixed seed), every line with what each stage makes of it:
  exact    the demo's exact step label (sandbox.demo.oracle_step_scores): the yardstick
  search   the binary search's label (paper 3, Algorithm 1, Fig. 2): label_prm_data.binary_search_first_error,
           each prefix checked by K completions of the labeling policy judged by sandbox.check_many (best-of-K),
           then label_prm_data.step_labels; and the search's probes, in the order it asked them
  R_phi    the PRM's score on the token holding the line's last character (sandbox.line_end_tokens: where
           train_prm.prm_example puts the line's label); beside it an outcome model's (ORM, --orm: the same rows, every
           line labeled with the response's verdict) and the Eq. 3 reward each would pay
  r_t      Eq. 3's dense reward on that token (train_psgpo.place_dense_rewards); the outcome reward on the last token
  V        the critic's V(s_t) at that token: as PSGPO starts it (train_psgpo.init_value_model, --value_init prm:
           a copy of the PRM) and trained (the PSGPO checkpoint's value/)
  A        GAE advantages over the line's tokens (train_psgpo.compute_gae, gamma 1, lambda 0.95) on rewards =
           outcome + Eq. 3, with either critic's values
Draws one PNG (a panel per response) and prints the same tables as markdown.

    bash run_demo.sh                                               # runs/baseline, runs/prm, runs/psgpo
    python train_prm.py --data runs/prm_data --init checkpoints/demo-sft --labels outcome --out runs/orm   # the ORM
    python experiments/anatomy.py                                  # -> docs/anatomy.png
    python experiments/anatomy.py --split train --responses task   # the tasks' reference and flawed solutions, no sampling

Token layout: one response at a time, no padding: seq = [prompt ids | response ids], response token t at column
P + t. As in train_psgpo.py: the PRM's R_phi(x, y<=t) is read at column P + t, V(s_t) (the state before token t)
at column P + t - 1, a line's dense reward sits on the token holding its last character, the outcome reward
on the response's last token (its EOS).
"""
import os
import random
import sys
import textwrap
from dataclasses import dataclass, field

import torch
from transformers import AutoModelForCausalLM, AutoModelForTokenClassification, set_seed

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import label_prm_data as lpd  # noqa: E402
import sandbox  # noqa: E402
import train_psgpo as tp  # noqa: E402


@dataclass
class Args:
    sft: str = field(default="checkpoints/demo-sft", metadata={"help": "the policy whose sampled responses are shown (PSGPO starts from it)"})
    label_policy: str = field(default="runs/baseline/ckpt-0016", metadata={"help": "the policy whose K completions check each prefix, as label_prm_data.py --policy"})
    prm: str = field(default="runs/prm", metadata={"help": "the PRM (train_prm.py): line scores, Eq. 3 and the starting critic"})
    orm: str = field(default="runs/orm", metadata={"help": (
        "an outcome model (train_prm.py --labels outcome) on the same rows, shown beside the PRM; empty: none")})
    psgpo: str = field(default="runs/psgpo/ckpt-0016", metadata={"help": "a PSGPO checkpoint: its value/ folder is the trained critic"})
    out: str = field(default="docs/anatomy.png", metadata={"help": "the picture"})
    split: str = field(default="test", metadata={"help": "demo split the tasks come from"})
    responses: str = field(default="sample", metadata={"help": "sample: sampled from --sft at --seed; task: the tasks' own texts, the reference solution (passes) and, on train, the flawed_solution (a planted slip)"})
    failing: int = field(default=1, metadata={"help": "failing responses shown (each with a planted slip), besides the passing one"})
    max_tasks: int = field(default=64, metadata={"help": "tasks tried, in a seeded order, for a response of each kind"})
    samples: int = field(default=4, metadata={"help": "responses sampled per task"})
    max_lines: int = field(default=10, metadata={"help": "longest response shown, in lines (the picture stays legible)"})
    k: int = field(default=20, metadata={"help": "completions per prefix check (best-of-K), as label_prm_data.py --k"})
    k_first: int = field(default=4, metadata={"help": "completions sampled first; the other K - k_first only if none passes, as label_prm_data.py"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of the responses"})
    prefix_temperature: float = field(default=1.0, metadata={"help": "sampling temperature of the K completions of a prefix"})
    max_new_tokens: int = field(default=160, metadata={"help": "longest response and completion in tokens"})
    batch_size: int = field(default=256, metadata={"help": "sequences per generate call"})
    workers: int = field(default=2, metadata={"help": "judge worker processes"})
    timeout: float = field(default=3.0, metadata={"help": "seconds per program"})
    seed: int = field(default=1, metadata={"help": "random seed (task order, responses, completions)"})

    def __post_init__(self):  # a value out of range stops here, in one line naming the flag, before anything loads
        sandbox.check_flags(self, positive="failing max_tasks samples max_lines k temperature prefix_temperature max_new_tokens "
                                           "batch_size workers timeout", nonnegative="k_first",
                            choices={"responses": ("sample", "task"), "split": ("train", "valid", "test")})


# ------------------------------------------------------------------ picking the responses
def candidates(policy, tok, eos, problems, a):
    """(problem, text, response ids, source) to choose from, a chunk of tasks at a time. sample: the policy's
    responses as train_psgpo.py's phase 1 draws and ends them; task: the task's own texts, each ended by an EOS."""
    for s in range(0, len(problems), 16):
        chunk = problems[s:s + 16]
        if a.responses == "task":
            texts = [(p, p.solution, "reference solution") for p in chunk]
            texts += [(p, p.meta["flawed_solution"], "flawed_solution") for p in chunk if "flawed_solution" in p.meta]
            yield [(p, t, tok(t, add_special_tokens=False)["input_ids"] + [eos[0]], src) for p, t, src in texts]
            continue
        batch = [p for p in chunk for _ in range(a.samples)]
        stops = [sandbox.stop_strings(p) for p in batch]
        prompts = [sandbox.prompt_ids(tok, p.prompt) for p in batch]
        seq, qmask = sandbox.generate(policy, tok, prompts, eos, sorted({s for st in stops for s in st}),
                                      do_sample=True, temperature=a.temperature, top_k=0, top_p=1.0, max_new_tokens=a.max_new_tokens)
        out = []
        for j, (p, row, st) in enumerate(zip(batch, seq[:, qmask.shape[1]:].tolist(), stops)):
            text, n = sandbox.end_response(tok, row, eos, st, prompts[j])
            out.append((p, text, row[:n], f"sampled from {a.sft}, seed {a.seed}, sample {j % a.samples + 1}"))
        yield out


def preference(problem, text, passed, max_lines):
    """(kind, rank) of a candidate, or None: a passing response, best with a neutral line (label 0) and several
    code lines; a failing one with a planted slip, best when the slip is the first wrong line (the exact scorer)
    and has correct code lines before it (a prefix the search can find). Ranks: bools first, then length."""
    steps = sandbox.split_steps(text)
    n_code = sum(not s[2] for s in steps)
    if not n_code or len(steps) > max_lines:
        return None
    if passed:
        return "pass", (any(s[2] for s in steps), n_code >= 4, n_code)
    slips = [i for i, (b, e, _) in enumerate(steps) if sandbox.demo.planted_kind(problem, text[b:e].rstrip("\n"))]
    if not slips:
        return None
    first_wrong = next((i for i, o in enumerate(sandbox.demo.oracle_step_scores(problem, text)) if o < 0), None)
    before = sum(not s[2] for s in steps[:slips[0]])
    return "fail", (first_wrong == slips[0], before >= 2, n_code >= 4, n_code)


def pick(policy, tok, eos, problems, a):
    """The passing response and a.failing failing ones (distinct tasks), the most preferred of the candidates,
    trying tasks until every kind has an ideal one (all its bools true) or the tasks run out."""
    found = {"pass": [], "fail": []}
    need = {"pass": 1, "fail": a.failing}
    for chunk in candidates(policy, tok, eos, problems, a):
        verdicts = sandbox.check_many([(p, t) for p, t, _, _ in chunk], a.workers, a.timeout)
        for (p, text, ids, src), v in zip(chunk, verdicts):
            if kind_rank := preference(p, text, v.passed, a.max_lines):
                kind, rank = kind_rank
                found[kind].append((rank, len(found[kind]), dict(problem=p, text=text, ids=ids, source=src, passed=v.passed, eos=ids[-1] in eos)))
        if all(len({c[2]["problem"].task_id for c in found[k] if all(c[0][:-1])}) >= need[k] for k in found):
            break
    chosen = []
    for kind, n in need.items():
        tasks = set()
        for _, _, c in sorted(found[kind], key=lambda c: (c[0], -c[1]), reverse=True):  # ties: the first found
            if len(tasks) < n and c["problem"].task_id not in tasks:
                tasks.add(c["problem"].task_id)
                chosen.append(c)
        if len(tasks) < n:
            what = "passing responses" if kind == "pass" else "failing responses with a planted slip"
            raise SystemExit(f"anatomy.py: found {len(tasks)} of {n} {what} (distinct tasks, at most {a.max_lines} lines) among {len(problems)} "
                             f"{a.split} tasks ({a.responses}); raise --max_tasks, --samples or --max_lines")
    return chosen


# ------------------------------------------------------------------ the method, applied to one response
def search(labeler, problem, c):
    """Paper 3: a failing response's first unrecoverable line by binary search, with label_prm_data.py's own search
    (its prefixes in whole tokens, best-of-K in two waves, the probes in the order asked). Returns (correct code
    lines, [[m, correct, completions judged]])."""
    response = lpd.Response(0, 0, c["text"], c["ids"])
    lpd.search(labeler, [problem], [sandbox.prompt_ids(labeler.tok, problem.prompt)], [sandbox.stop_strings(problem)], [response])
    return response.correct, response.probes


@torch.no_grad()
def trace(c, tok, prm, critics, targs, orm=None):
    """Phases 2-5 of train_psgpo.py for one response: outcome reward, Eq. 3 on the PRM's line scores, the
    critics' values V(s_t), GAE. Returns (line ends, R_phi per line, Eq. 3's rewards [R], all rewards [R], {critic: (values [R],
    advantages [R])}, (the ORM's score per line, its Eq. 3 rewards [R]) or None)."""
    prompt = sandbox.prompt_ids(tok, c["problem"].prompt)
    P, R = len(prompt), len(c["ids"])
    seq = torch.tensor([prompt + c["ids"]])                                      # [1, P + R]
    mask, rmask = torch.ones_like(seq), torch.ones(1, R)                         # [1, P + R], [1, R]
    response, steps = seq[:, P:], sandbox.split_steps(c["text"])
    passed = torch.tensor([float(c["passed"])])
    rewards = torch.zeros(1, R)
    rewards[0, R - 1] += passed[0]                                               # phase 2: outcome reward on the last token
    scores = tp.forward(prm, seq, mask)[:, P:, 0]                                # [1, R]: R_phi(x, y<=t) after token t
    ro = tp.Rollout([c["problem"]], seq, mask, P, response, rmask, [c["text"]], [R], [steps])  # phase 1's, one response
    dense, step_scores = tp.place_dense_rewards(tok, ro, scores, passed, targs)
    outcome_model = None
    if orm is not None:  # the same Eq. 3 on the outcome model's scores (shown beside; the critics' runs used the PRM)
        orm_dense, orm_scores = tp.place_dense_rewards(tok, ro, tp.forward(orm, seq, mask)[:, P:, 0], passed, targs)
        outcome_model = (orm_scores[0], orm_dense[0])
    rewards += dense                                                             # phase 3: Eq. 3 on each code line's last token
    out = {}
    for name, value in critics.items():
        values = tp.token_values(value, seq, mask, P) * rmask                    # [1, R]: V(s_t), phase 4
        adv, _ = tp.compute_gae(rewards * rmask, values, rmask, targs.gamma, targs.gae_lambda)  # phase 5 (KL: kl_coef 0)
        out[name] = (values[0], adv[0])
    return sandbox.line_end_tokens(tok, c["ids"], steps), step_scores[0], dense[0], rewards[0], out, outcome_model


def table(c, ends, scores, dense, rewards, critics, outcome_model=None):
    """One dict per line (and one for the last token): every column of the picture."""
    text, steps = c["text"], sandbox.split_steps(c["text"])
    exact = sandbox.demo.oracle_step_scores(c["problem"], text)
    indent = min(len(text[b:e]) - len(text[b:e].lstrip(" ")) for b, e, _ in steps)
    probe_at = {m: (i + 1, ok, k) for i, (m, ok, k) in enumerate(c["probes"])}
    orm_scores, orm_dense = outcome_model or (None, None)
    rows, code_seen, start = [], 0, 0
    for i, ((b, e, neutral), t) in enumerate(zip(steps, ends)):
        code_seen += not neutral
        line = text[b:e].rstrip("\n")
        rows.append({"line": i + 1, "m": None if neutral else code_seen, "text": line[indent:],
                     "slip": sandbox.demo.planted_kind(c["problem"], line),
                     "R_orm": orm_scores[i] if orm_scores else None, "r_orm": orm_dense[t].item() if orm_scores else None,
                     "exact": int(exact[i]), "search": c["labels"][i], "probe": None if neutral else probe_at.get(code_seen),
                     "R_phi": scores[i], "r": dense[t].item(), "neutral": neutral,
                     **{f"V {k}": v[t].item() for k, (v, _) in critics.items()},
                     **{f"A {k}": adv[start:t + 1].mean().item() for k, (_, adv) in critics.items()}})
        start = t + 1
    last = len(c["ids"]) - 1  # the response's last token (its EOS): the outcome reward; A over the tokens after the last line
    rows.append({"line": "end", "m": None, "R_orm": None, "r_orm": (rewards - dense)[last].item() if orm_scores else None,
                 "text": f"{'<EOS>' if c['eos'] else '(its last token)'}: the outcome reward", "slip": None,
                 "exact": None, "search": None, "probe": None, "R_phi": None, "r": (rewards - dense)[last].item(), "neutral": True,
                 **{f"V {k}": v[last].item() for k, (v, _) in critics.items()},
                 **{f"A {k}": adv[min(start, last):].mean().item() for k, (_, adv) in critics.items()}})
    return rows


def main():
    a = sandbox.parse_args(Args)
    for flag, path, tokenizer in (("sft", a.sft, True), ("label_policy", a.label_policy, False), ("prm", a.prm, False),
                                  ("psgpo", os.path.join(a.psgpo, "value"), False)) + ((("orm", a.orm, False),) if a.orm else ()):
        try:
            sandbox.find_model(path, tokenizer=tokenizer)
        except sandbox.DataError as e:
            first = ("train it: python train_prm.py --data runs/prm_data --init checkpoints/demo-sft --labels outcome --out runs/orm"
                     if flag == "orm" else "run the quick start, bash run_demo.sh, first")
            raise SystemExit(f"anatomy.py: --{flag} {e} ({first}; or --orm '' for none)" if flag == "orm" else
                             f"anatomy.py: --{flag} {e} ({first})")
    set_seed(a.seed)
    problems = sandbox.load_problems("demo", a.split)
    random.Random(a.seed).shuffle(problems)
    problems = problems[:a.max_tasks]
    tok, eos = sandbox.load_tokenizer(a.sft)  # every stage saves the SFT policy's tokenizer with its model
    load = lambda cls, path, **kw: sandbox.load_model(cls, path, "cpu", torch.float32, **kw).eval()  # noqa: E731
    # 1. the responses: a passing one and failing ones with a planted slip, sampled from the SFT policy
    chosen = pick(load(AutoModelForCausalLM, a.sft), tok, eos, problems, a)

    # 2. the binary search's labels, each prefix checked by the labeling policy's completions (label_prm_data.py)
    labeling = lpd.Args(policy=[a.label_policy], k=a.k, k_first=a.k_first, prefix_temperature=a.prefix_temperature,
                        max_new_tokens=a.max_new_tokens, batch_size=a.batch_size, workers=a.workers, timeout=a.timeout)
    labeler = lpd.Labeler(a.label_policy, load(AutoModelForCausalLM, a.label_policy), tok, eos, labeling)
    for c in chosen:
        code = [s for s in sandbox.split_steps(c["text"]) if not s[2]]
        c["correct"], c["probes"] = (len(code), []) if c["passed"] else search(labeler, c["problem"], c)
        c["labels"] = lpd.step_labels(sandbox.split_steps(c["text"]), c["passed"], c["correct"])

    # 3. the PRM's line scores, Eq. 3, the critic as PSGPO starts it (a copy of the PRM) and as it ends, GAE (train_psgpo.py)
    targs = tp.Args(policy=a.sft, prm=a.prm, value_init="prm")  # train_psgpo.py's defaults: lam 0.25 / 0.025, 1/T, gamma 1, GAE lambda 0.95
    prm = load(AutoModelForTokenClassification, a.prm)
    orm = load(AutoModelForTokenClassification, a.orm) if a.orm else None
    critics = {"before": tp.init_value_model(targs, lambda cls, path, dtype, **kw: load(cls, path, **kw)),
               "after": load(AutoModelForTokenClassification, os.path.join(a.psgpo, "value"))}
    for c in chosen:
        c["rows"] = table(c, *trace(c, tok, prm, critics, targs, orm))
    print(markdown(chosen, a, targs))
    draw(chosen, a, targs)
    print(f"wrote {a.out}")


# ------------------------------------------------------------------ output: markdown and the picture
COLUMNS = [  # key, header in the picture, width in inches (None: the line's text, as wide as the longest)
    ("line", "#", 0.34), ("m", "m", 0.34), ("text", "line of the response", None), ("exact", "exact", 0.62),
    ("search", "label", 0.56), ("probe", "probe", 1.05), ("R_phi", "$R_\\phi$", 0.68), ("r", "$r_t$", 0.76),
    ("R_orm", "$R_{orm}$", 0.68), ("r_orm", "$r_t$", 0.76), ("V before", "at start", 0.7), ("V after", "trained", 0.7),
    ("A before", "V at start", 0.78), ("A after", "V trained", 0.78)]
GROUPS = [  # first column, last column, title, the colour of its legend
    ("exact", "exact", "yardstick", "#6a1b9a"), ("search", "probe", "binary search (Alg. 1)", "#0d47a1"),
    ("R_phi", "r", "PRM, Eq. 3", "#0d47a1"), ("R_orm", "r_orm", "ORM, Eq. 3", "#555555"),
    ("V before", "V after", "critic V(s_t)", "#0d47a1"), ("A before", "A after", "GAE advantage, with", "#0d47a1")]
ORDINAL = {1: "1st", 2: "2nd", 3: "3rd"}


def trained_for(a):
    """'after N iterations' from the PSGPO checkpoint's name (ckpt-NNNN), else 'trained'."""
    digits = os.path.basename(a.psgpo.rstrip("/")).rsplit("-", 1)[-1]
    return f"after {int(digits)} iterations" if digits.isdigit() else "trained"


def header(c, a, targs):
    p, code = c["problem"], sum(not s[2] for s in sandbox.split_steps(c["text"]))
    slips = [f"line {r['line']} ({r['slip']})" for r in c["rows"] if r["slip"]]
    verdict = "passes its tests: outcome reward 1" if c["passed"] else "fails its tests: outcome reward 0"
    lam = targs.lam_pass if c["passed"] else targs.lam_fail
    first = (f"{p.task_id} ({c['source']}) {verdict}; T = {code} code lines, lam = {lam}"
             + (f"; planted slip on {', '.join(slips)}" if slips else ""))
    if c["passed"]:
        second = "Binary search: not needed, every prefix of a passing program can be completed: every code line is labeled +1."
    else:
        line_of = [r["line"] for r in c["rows"] if not r["neutral"]]  # code line m is the picture's line line_of[m - 1]
        asked = " -> ".join(f"m = {m} (line {line_of[m - 1]}) {'yes' if ok else 'no'} ({k} completions judged)"
                            for m, ok, k in c["probes"]) or "nothing to ask"
        second = (f"Binary search over code lines m = 1-{code - 1} (the whole response is known to fail): {asked}. Correct prefix: "
                  f"{c['correct']} code line{'s' * (c['correct'] != 1)}; first unrecoverable: m = {c['correct'] + 1} (line {line_of[c['correct']]}).")
    return first, second


def cell(r, key, digits=3):
    """A cell's text; markdown gives more digits (the tests check the numbers)."""
    v = r[key]
    if v is None or (key in ("r", "r_orm") and r["neutral"] and r["line"] != "end"):  # a neutral line earns no dense reward
        return ""
    if key in ("r", "r_orm") and r["line"] == "end" and digits == 3:
        return f"{v:g}"
    if key == "probe":
        i, ok, k = v
        return f"{ORDINAL.get(i, f'{i}th')}: {'yes' if ok else 'no'} of {k}"
    if key in ("exact", "search"):
        return f"{v:+d}" if v else "0"
    return f"{v:+.{digits + (key in ('r', 'r_orm'))}f}" if isinstance(v, float) else str(v)


def markdown(chosen, a, targs):
    after = trained_for(a)
    names = ["line", "m (code line)", "text", "exact (yardstick)", "search label", "probe (order: answer, of completions)",
             "R_phi", "r_t", "R_orm", "r_t (ORM)", "V at start (PRM copy)", f"V {after}", "A with V at start", f"A with V {after}"]
    out = []
    for c in chosen:
        first, second = header(c, a, targs)
        out += [f"\n### {first}", "", second, "", "| " + " | ".join(names) + " |", "|---" * len(names) + "|"]
        for r in c["rows"]:
            cells = [cell(r, k, digits=5) for k, _, _ in COLUMNS]
            cells[2] = "`" + r["text"].replace("|", "\\|") + "`" + (f" (slip: {r['slip']})" if r["slip"] else "")
            out.append("| " + " | ".join(cells) + " |")
    out += ["", *(f"- {title}: {text}" for title, text in legends(chosen, a, targs))]
    return "\n".join(out)


def legends(chosen, a, targs):
    """(group, one sentence) for each column group, and the two things in the critic's columns a class asks about."""
    after = trained_for(a)
    fail = next((c for c in chosen if not c["passed"]), None)
    lines = [
        ("yardstick", "exact: the demo's exact step scorer (+1 while every line so far computes the reference's value, -1 "
                      "from the first that does not, 0 neutral); no stage uses it: it measures the labels."),
        ("binary search (Alg. 1)", f"label: +1 up to the last prefix one of K = {a.k} completions can finish, -1 after, 0 "
                                   f"for comments (paper section 3); probe: the search's questions in order, yes / no and how "
                                   f"many completions were judged ({a.k_first} first, all {a.k} only when none passed)."),
        ("PRM, Eq. 3", f"R_phi: the PRM's score on the line's last token; r_t = lam * R_phi / T paid there (lam {targs.lam_fail} "
                       f"failing, {targs.lam_pass} passing; the end row: the outcome reward 1 / 0 on the last token)."),
        ("ORM, Eq. 3", "R_orm, r_t: the same for an outcome model trained on the same rows with every line labeled by the "
                       "response's verdict (train_prm.py --labels outcome): the control that tells line labels from any scorer."
                       + ("" if a.orm else " (not given: --orm '')")),
        ("critic V(s_t)", f"the value of the state before each token, read one column before R_phi: at start (a copy of the "
                          f"PRM, value init) V on a line's last token is R_phi of everything before that token; {after}."),
        ("GAE advantage, with", "A averaged over the line's tokens (gamma 1, lambda 0.95), on outcome + Eq. 3 rewards, with "
                                "either critic; PSGPO whitens them over its batch.")]
    if fail is not None:
        end = fail["rows"][-1]
        before_error = [r for r in fail["rows"] if r["search"] == 1]
        lines.append(("why A > 0 on a failure's last token",
                      f"The failing response's last token has A {end['A before']:+.2f} with the critic at start: the copied "
                      f"critic there says V {end['V before']:+.2f} on the labels' [-1, 1] scale, while a failure returns 0, so "
                      f"the advantage 0 - V is the copy's scale, not a reward (train_psgpo.py --value_scale returns maps the "
                      f"copy to [0, 1]; training fixes it: {end['A after']:+.2f} {after})."))
        if any(r["A before"] < 0 for r in before_error):
            lines.append(("why A < 0 on correct lines",
                          "The copied critic values a correct prefix near +1 (the PRM's label for it), but a failing response "
                          "returns about 0 (its small Eq. 3 rewards, then the 0 outcome): GAE's advantage, about the return to go "
                          "minus V, is negative on correct lines before the slip for the failure ahead and the critic's scale, "
                          "not for the lines themselves."))
    return lines


def draw(chosen, a, targs):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LinearSegmentedColormap
    cmap = LinearSegmentedColormap.from_list("rwg", ["#e57373", "#ffffff", "#66bb6a"])
    columns = [c for c in COLUMNS if a.orm or c[0] not in ("R_orm", "r_orm")]
    groups = [g for g in GROUPS if a.orm or g[0] != "R_orm"]
    mono = 0.6 * 10 / 72  # inches per character of 10 pt DejaVu Sans Mono
    chars = max(len(r["text"]) + (len(r["slip"]) + 10 if r["slip"] else 0) for c in chosen for r in c["rows"])
    widths = [w if w else max(2.3, mono * chars + 0.15) for _, _, w in columns]
    gap = 0.12  # the yardstick stands apart from the method's columns
    x0 = [0.15 + sum(widths[:i]) + gap * (i > [k for k, _, _ in columns].index("exact")) for i in range(len(widths))]
    W = x0[-1] + widths[-1] + 0.15
    wrap = lambda text, pt, em=0.57: textwrap.wrap(text, int((W - 0.3) / (em * pt / 72)))  # noqa: E731  (DejaVu Sans: ~0.57 em a character, bold ~0.63)
    # the colour scale of each column: labels and scores on the labels' [-1, 1]; r, V and A on the largest |value| shown
    big = lambda keys: max([abs(r[k]) for c in chosen for r in c["rows"] for k in keys if isinstance(r[k], float)] + [1e-9])  # noqa: E731
    scale = {"exact": 1, "search": 1, "R_phi": 1, "R_orm": 1, "r": big(["r", "r_orm"]), "r_orm": big(["r", "r_orm"]),
             "V before": big(["V before", "V after"]), "V after": big(["V before", "V after"]),
             "A before": big(["A before", "A after"]), "A after": big(["A before", "A after"])}
    heads = [(wrap(first, 11, 0.63), wrap(second, 10)) for first, second in (header(c, a, targs) for c in chosen)]
    note = [(title, line) for title, text in legends(chosen, a, targs) for line in wrap(f"{title}: {text}", 10.5)]
    row, top = 0.28, 0.8
    H = top + sum(0.19 * len(f) + 0.17 * len(s) + 0.12 + 0.56 + row * len(c["rows"]) + 0.3 for c, (f, s) in zip(chosen, heads)) + 0.2 * len(note) + 0.15
    fig = plt.figure(figsize=(W, H))
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(0, W), ax.set_ylim(H, 0), ax.axis("off")
    ax.text(0.15, 0.3, "Anatomy of PSGPO, line by line: labels, PRM, Eq. 3, critic, GAE", fontsize=15, weight="bold", va="center")
    models = (f"policy {a.sft} · labeling policy {a.label_policy} · PRM {a.prm}" + (f" · ORM {a.orm}" if a.orm else "")
              + f" · critic {trained_for(a)}: {a.psgpo}/value")
    ax.text(0.15, 0.6, "\n".join(wrap(models, 9.5)[:2]), fontsize=9.5, va="center", color="#444")
    y = top
    col = {key: i for i, (key, _, _) in enumerate(columns)}
    for c, (first, second) in zip(chosen, heads):
        for line in first:
            ax.text(0.15, y + 0.095, line, fontsize=11, weight="bold", va="center", color="#1b5e20" if c["passed"] else "#b71c1c")
            y += 0.19
        for line in second:
            ax.text(0.15, y + 0.085, line, fontsize=10, va="center")
            y += 0.17
        y += 0.12
        for lo, hi, title, colour in groups:  # column groups above the column headers
            left, right = x0[col[lo]] + 0.03, x0[col[hi]] + widths[col[hi]] - 0.03
            ax.text((left + right) / 2, y + 0.1, title, fontsize=9, ha="center", va="center", color=colour, weight="bold")
            ax.plot([left, right], [y + 0.21] * 2, color=colour, lw=0.8)
        for (key, title, _), x, w in zip(columns, x0, widths):
            ax.text(x + (0.05 if key == "text" else w / 2), y + 0.37, title, fontsize=10, weight="bold", va="center",
                    ha="left" if key == "text" else "center")
        ax.plot([0.15, W - 0.15], [y + 0.53] * 2, color="#777", lw=0.8)
        y += 0.56
        for r in c["rows"]:
            for (key, _, _), x, w in zip(columns, x0, widths):
                v, txt = r[key], cell(r, key)
                if key == "probe" and v:
                    face = cmap(1.0 if v[1] else 0.0)
                elif key in scale and txt:
                    face = cmap(0.5 + 0.5 * max(-1.0, min(1.0, v / scale[key])))
                else:
                    face = "white"
                ax.add_patch(plt.Rectangle((x + 0.012, y + 0.015), w - 0.024, row - 0.03, facecolor=face, edgecolor="none"))
                if key == "text":
                    ax.text(x + 0.05, y + row / 2, txt, fontsize=10, family="monospace", va="center",
                            color="#777" if r["neutral"] else "black", style="italic" if r["line"] == "end" else "normal")
                    if r["slip"]:
                        ax.text(x + 0.05 + mono * (len(txt) + 1), y + row / 2, f"<- slip: {r['slip']}", fontsize=9, va="center",
                                color="#b71c1c", weight="bold")
                else:
                    ax.text(x + w / 2, y + row / 2, txt, fontsize=10 if key != "probe" else 9, va="center", ha="center",
                            color="#777" if key == "m" else "black")
            y += row
        y += 0.3
    colours = {title: colour for _, _, title, colour in GROUPS}
    for title, line in note:  # one legend per column group, in its colour, large enough to project
        ax.text(0.15, y, line, fontsize=10.5, va="top", color=colours.get(title, "#333"))
        y += 0.2
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    fig.savefig(a.out, dpi=130)
    plt.close(fig)


if __name__ == "__main__":
    main()
