"""The card's inline stylesheet: system fonts only, nothing loaded from anywhere."""

CSS = """
:root{--fg:#1f2933;--muted:#616e7c;--line:#e4e7eb;--accent:#3b6ea8;--warn-bg:#fff4e5;--warn:#b35c00}
*{box-sizing:border-box}
body{margin:0;background:#f5f7fa;color:var(--fg);
 font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","Noto Sans CJK SC","Helvetica Neue",Arial,sans-serif}
main{max-width:980px;margin:0 auto;padding:28px 24px 48px;background:#fff;min-height:100vh}
h1{font-size:26px;margin:0 0 14px}
h2{font-size:20px;margin:34px 0 10px;padding-bottom:4px;border-bottom:2px solid var(--line)}
.warnings{background:var(--warn-bg);border-left:4px solid var(--warn);margin:0 0 16px;padding:10px 14px 10px 32px;color:#5c3300}
.warnings li{margin:3px 0}
.summary{display:grid;grid-template-columns:repeat(auto-fill,minmax(210px,1fr));gap:8px;
 border:1px solid var(--line);border-radius:8px;padding:12px;background:#fafbfc}
.kv{display:flex;flex-direction:column;padding:4px 8px}
.kv span{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.03em}
.kv b{font-size:17px;word-break:break-word}
nav{margin:14px 0 0;color:var(--muted)} nav a{color:var(--accent);text-decoration:none}
p.note{color:var(--muted);font-style:italic}
.scroll{overflow-x:auto;margin:10px 0}
table{border-collapse:collapse;font-size:13.5px;min-width:50%}
th,td{border-bottom:1px solid var(--line);padding:5px 10px;text-align:left;vertical-align:top}
th{background:#f0f3f7;font-weight:600}
td{font-variant-numeric:tabular-nums;max-width:520px;word-break:break-word}
figure{margin:12px 0} figure img{max-width:100%;height:auto;border:1px solid var(--line);border-radius:6px}
details{margin:8px 0;border:1px solid var(--line);border-radius:6px;padding:6px 12px;background:#fcfcfd}
summary{cursor:pointer;font-weight:600;color:var(--accent)}
.ex{margin:10px 0;padding-top:6px;border-top:1px dashed var(--line)}
.ex-title{font-weight:600;font-size:13.5px}
dl{margin:4px 0;display:grid;grid-template-columns:110px 1fr;gap:2px 10px;font-size:13.5px}
dt{color:var(--muted)} dd{margin:0;white-space:pre-wrap;word-break:break-word}
footer{margin-top:40px;color:var(--muted);font-size:12px}
"""
