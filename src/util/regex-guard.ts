// Envoy's regexes are RE2 (linear time); the waypoint runs them with JavaScript's backtracking
// engine on request paths and headers. So patterns are held to what RE2 accepts and kept away from
// the shape that backtracks exponentially: no backreferences or lookaround (RE2 has neither), and
// no quantified group that itself contains a quantifier ("(a+)+", "(x*y)*"). Both the control plane
// (reporting the field) and the waypoint (NACKing) check with this.

export const MAX_REGEX = 1024;

/** Why a pattern is refused, or undefined when it is acceptable. */
export function regexProblem(source: string): string | undefined {
  if (source.length > MAX_REGEX) return `longer than ${MAX_REGEX} characters`;
  if (/\\[1-9]|\\k</.test(source)) return 'backreferences are not RE2 syntax';
  if (/\(\?<?[=!]/.test(source)) return 'lookaround is not RE2 syntax';
  // A stack of open groups: whether each holds a quantifier; a quantifier right after a closing group that held one nests.
  const stack: boolean[] = [];
  let lastGroupQuantified = false;
  let inClass = false;
  for (let i = 0; i < source.length; i++) {
    const ch = source[i]!;
    if (ch === '\\') {
      i++;
      lastGroupQuantified = false;
      continue;
    }
    if (inClass) {
      if (ch === ']') inClass = false;
      continue;
    }
    if (ch === '[') inClass = true;
    else if (ch === '(') stack.push(false);
    else if (ch === ')') {
      lastGroupQuantified = stack.pop() ?? false;
      if (lastGroupQuantified && stack.length) stack[stack.length - 1] = true;
      continue;
    } else if (ch === '*' || ch === '+' || (ch === '{' && /^\{\d+,\d*\}/.test(source.slice(i)))) {
      if (lastGroupQuantified) return 'a repeated group that itself repeats can backtrack exponentially';
      if (stack.length) stack[stack.length - 1] = true;
    }
    lastGroupQuantified = false;
  }
  return undefined;
}
