"""The contents of closed tags, `<name>...</name>`, in time linear in the text's length.

`closed_tags(text, "answer")` is `re.findall(r"<answer>(.*?)</answer>", text, re.DOTALL)` (with re.IGNORECASE
unless ignore_case=False): scanning left to right, each opening tag pairs with the first closing tag after it,
and the scan resumes after that closing tag. The regular expression takes time quadratic in the number of
unclosed opening tags (every one of them scans to the end of the text: 40,000 of them took 131 s); this scan
looks for each tag once.
"""


def closed_tags(text: str, name: str, *, ignore_case: bool = True) -> list[str]:
  """The contents of the closed `<name>...</name>` tags of `text`, in order (see the module docstring)."""
  haystack = text.lower() if ignore_case else text
  if ignore_case and len(haystack) != len(text):   # lower() changed lengths (e.g. "İ"): map positions one by one
    haystack = "".join(c.lower() if len(c.lower()) == 1 else c for c in text)
  opening, closing = f"<{name}>", f"</{name}>"
  if ignore_case:
    opening, closing = opening.lower(), closing.lower()
  found, position = [], 0
  while True:
    start = haystack.find(opening, position)
    if start < 0:
      return found
    end = haystack.find(closing, start + len(opening))
    if end < 0:
      return found
    found.append(text[start + len(opening):end])
    position = end + len(closing)
