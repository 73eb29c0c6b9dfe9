"""sandbox/rules.py - the rules every stage applies alike, each written once: a PRM trained under one rule and applied
under another would score the wrong tokens.

- a step is a line: `split_steps(text)` (paper section 3, "a step is a line of code"); labels, PRM scores and
  dense rewards sit on its lines;
- what a model is fed: `prompt_ids` (plain, or through an instruct model's chat template);
- where a response stops: `stop_strings`, `cut_at_stop`, `end_response` (its first EOS or stop string);
- which token ends a line: `line_end_tokens` (where a line's label sits in training, its PRM score is read and its
  dense reward lands), and the prefix through a line in whole tokens: `prefix_through_line` (what the binary search
  completes).
"""
import io
import tokenize

# ---------------------------------------------------------------------------------------------
# Steps: a step is a non-blank line of the response (paper section 3, "a step is a line of code").
# ---------------------------------------------------------------------------------------------
def split_steps(text):
    """[(start, end, neutral)]: character spans of the non-blank lines of `text`, end exclusive, the line's
    newline included when it has one. `neutral`: the line does nothing - a comment, a statement that is only a
    string (a docstring), `pass` or `...` - found with Python's tokenizer (a `#` inside a string is no comment).
    A neutral line is labeled 0 (the paper's neutral labeling), earns no dense reward and is not counted in
    Eq. 3's T, so padding a response with such lines changes nothing. Where the text stops tokenizing (model
    output often does), lines from there on are neutral when they start with `#`."""
    skip = (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER, tokenize.COMMENT)
    code, idle, trusted, statement = set(), set(), float("inf"), []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.COMMENT:
                idle.add(tok.start[0])
            elif tok.type not in skip:
                statement.append(tok)
            elif tok.type in (tokenize.NEWLINE, tokenize.ENDMARKER) and statement:  # a logical line ends
                noop = all(t.type == tokenize.STRING for t in statement) or [t.string for t in statement] in (["pass"], ["..."])
                (idle if noop else code).update(i for t in statement for i in range(t.start[0], t.end[0] + 1))
                statement = []
    except Exception as e:  # TokenError, SyntaxError; from Python 3.12 on also Unicode errors and SystemError (a NUL byte)
        trusted = (e.args[1][0] if isinstance(e, tokenize.TokenError) else getattr(e, "lineno", None)) or 1
    code.update(i for t in statement for i in range(t.start[0], t.end[0] + 1))  # a statement the error cut off
    steps, pos = [], 0
    lines = text.split("\n")
    for i, line in enumerate(lines, 1):
        end = pos + len(line) + (i < len(lines))
        if line.strip():
            neutral = (i in idle and i not in code) if i < trusted else line.lstrip().startswith("#")
            steps.append((pos, end, neutral))
        pos = end
    return steps


# ---------------------------------------------------------------------------------------------
# Responses: what the model is fed, where a response stops, which token ends a line.
# ---------------------------------------------------------------------------------------------
CHAT_REQUEST = "Complete this Python code:\n```python\n{prompt}```"
# The closing code fence ends a completion wherever it stands: the prompt ends with a newline, so "\n```" would miss
# the fence of a model that closes the block at once (SmolLM2-135M-Instruct does, on most HumanEval tasks) and the
# judge would run "prompt + ```"; no line of Python code holds three backticks outside a string.
CHAT_STOP = "```"


def prompt_ids(tok, prompt, chat=False):
    """The token ids a model is fed for a problem's prompt. Plain (base models, the demo): the prompt with the
    tokenizer's special tokens (a bos), as train_sft.py trains. chat (instruct models, --chat_template true):
    the tokenizer's chat template, the user asking for the code and the assistant's turn begun with the prompt
    in a code block, so the model continues the prompt as a base model does, the completion is judged the same
    way (prompt + completion) and its lines are the steps; it ends at the closing fence (CHAT_STOP)."""
    if not chat:
        return tok(prompt)["input_ids"]
    turns = [{"role": "user", "content": CHAT_REQUEST.format(prompt=prompt)}, {"role": "assistant", "content": f"```python\n{prompt}"}]
    return tok(tok.apply_chat_template(turns, tokenize=False, continue_final_message=True), add_special_tokens=False)["input_ids"]


def stop_strings(problem, chat=False):
    """Where a problem's completion ends (its stop sequences; the closing code fence under a chat template)."""
    return problem.stop + [CHAT_STOP] * chat


def cut_at_stop(text, stops, lead=""):
    """The text up to (not including) the first of the stop strings. `lead`: the text just before it (the prompt's
    end), where a stop string may begin: generate's stop check reads the whole sequence, so a prompt ending in a
    newline and a response beginning with `def` meet "\ndef" and the response is cut to nothing. A stop string
    that lies within the lead alone does not count."""
    starts = [i for s in stops for i in [(lead + text).find(s, max(0, len(lead) - len(s) + 1))] if i >= 0]
    return text[:max(0, min(starts) - len(lead))] if starts else text


def end_response(tok, ids, eos, stops, prompt=()):
    """Where a sampled response stops, for every stage alike: at its first EOS token (any id in `eos`; the
    EOS is the response's last token, the one the outcome reward sits on) or where its text reaches one of
    the stop strings, whichever comes first; a stop string may begin in the prompt (its token ids, `prompt`).
    Returns (the completion judged: the text before the stop string; n: the response tokens kept, through the
    EOS or through the token where the stop string starts, at least the first)."""
    n = next((t + 1 for t, i in enumerate(ids) if i in eos), len(ids))
    text = tok.decode(ids[:n - (n > 0 and ids[n - 1] in eos)], skip_special_tokens=True)  # an EOS is no text, special or not
    cut = len(cut_at_stop(text, stops, tok.decode(list(prompt)[-16:], skip_special_tokens=True)))
    if cut < len(text):
        n = next(k for k in range(1, n + 1) if len(tok.decode(ids[:k], skip_special_tokens=True)) > cut)
    return text[:cut], n


def line_end_tokens(tok, ids, steps):
    """Index into `ids` (a response's tokens) of the token holding each step's last character (its newline,
    when it has one): where the step's PRM label sits in training, its score is read and its dense reward
    lands. Found by decoding prefixes, not from the tokenizer's offsets, so it holds for any token
    sequence a model wrote, not only the tokenizer's own split of the text: the first t whose decoded
    prefix ids[:t + 1] reaches the step's end, by bisection (the decoded length grows with t); the last
    token, for a tokenizer whose decoding does not give the text back character for character."""
    out, lo = [], 0
    for _, end, _ in steps:
        hi = len(ids) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if len(tok.decode(ids[:mid + 1], skip_special_tokens=True)) >= end else (mid + 1, hi)
        out.append(lo)
    return out

def prefix_through_line(tok, ids, step):
    """The first tokens of a response, ids[:n], that hold its text through `step` (a split_steps span), in whole
    tokens: through the token holding the line's last character (line_end_tokens), which a BPE may have merged with
    the next line's indentation; that token is kept only when the line ends exactly there, else the prefix stops
    before it. Returns (n, the prefix's text). The binary search completes exactly these tokens, so a prefix the
    policy continues is a prefix of what it wrote, token for token."""
    t = line_end_tokens(tok, ids, [step])[0]
    n = t + (len(tok.decode(ids[:t + 1], skip_special_tokens=True)) == step[1])
    return n, tok.decode(ids[:n], skip_special_tokens=True)
