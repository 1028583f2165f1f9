#!/usr/bin/env python3
"""Regenerates proxy/admin_page.h (the status page as one C string) from proxy/admin_page.html.
Run after editing the HTML: python3 scripts/embed_page.py
--check: write nothing; exit 1 when proxy/admin_page.h is not what the HTML gives (a test runs this)."""
import os
import sys
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
src = open(os.path.join(root, "proxy/admin_page.html"), encoding="utf-8").read()
out = ["/* admin_page.h — GENERATED from admin_page.html by scripts/embed_page.py; edit the HTML. */",
       "/* The status page: one self-contained HTML document (no external assets) that fetches /status,",
       " * /status/series and /status/requests every 2 s and redraws its tables and inline SVG charts. */",
       "#ifndef LIFELINE_ADMIN_PAGE_H", "#define LIFELINE_ADMIN_PAGE_H", "", "static const char admin_page_html[] ="]
for line in src.splitlines():
    s = line.replace("\\", "\\\\").replace('"', '\\"')
    s = "".join(c if ord(c) < 128 else "\\u%04x" % ord(c) for c in s)
    out.append('"%s\\n"' % s)
out[-1] += ";"
out += ["", "#endif", ""]
text = "\n".join(out)
dest = os.path.join(root, "proxy/admin_page.h")
if "--check" in sys.argv[1:]:
    if open(dest, encoding="utf-8").read() != text:
        sys.exit("proxy/admin_page.h is stale: run python3 scripts/embed_page.py")
    sys.exit(0)
open(dest, "w").write(text)
