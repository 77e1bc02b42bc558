"""The page's CSS: fields in a grid that wraps to one column on a phone, labels and help that wrap instead of being cut,
each field's config key shown small beside its label, bad values marked, and the dataset preview table."""

from __future__ import annotations

BASE = """
.ts-grid, .ts-grid > .form { display: grid !important;
  grid-template-columns: repeat(auto-fill, minmax(min(250px, 100%), 1fr)); gap: 1px; }
.ts-grid > .form { grid-column: 1 / -1; background: transparent !important; border: 0 !important; gap: 8px; }
.ts-grid > *, .ts-grid > .form > * { min-width: 0 !important; width: auto !important; margin: 0 !important; }
.ts-grid > .form > * { border: 1px solid var(--border-color-primary) !important;
  border-radius: var(--block-radius, 8px) !important; }
.ts-field [data-testid="block-info"], .ts-field .label-text, .ts-field .info-text, .ts-wrap [data-testid="block-info"],
.ts-wrap .info-text { white-space: normal !important; overflow: visible !important; text-overflow: clip !important;
  overflow-wrap: anywhere; }
.ts-field .info-text { margin-bottom: 4px; }
.ts-bad { box-shadow: 0 0 0 2px var(--error-border-color, #ef4444) !important; border-radius: 6px; }
.ts-bad [data-testid="block-info"], .ts-bad .label-text { color: var(--error-text-color, #b91c1c) !important; }
.ts-heading h3 { margin: 6px 0 0 0; }
.ts-buttons { flex-wrap: wrap !important; }
.ts-buttons > button { min-width: 130px !important; }
.ts-data { overflow-x: auto; max-width: 100%; }
.ts-data pre { white-space: pre-wrap; overflow-wrap: anywhere; font-size: 12px; margin: 0 0 8px 0; }
.ts-data table { width: 100%; border-collapse: collapse; font-size: 13px; table-layout: auto; }
.ts-data th, .ts-data td { border: 1px solid var(--border-color-primary, #e5e7eb); padding: 4px 6px;
  vertical-align: top; text-align: left; }
.ts-data td.ts-text { white-space: pre-wrap; overflow-wrap: anywhere; font-family: var(--font-mono, monospace);
  font-size: 12px; }
.ts-data td:not(.ts-text), .ts-data th:not(:last-child) { width: 1%; white-space: nowrap; }
@media (max-width: 640px) {  /* a phone: each example a card, its numbers on one line above its text */
  .ts-data table, .ts-data tbody, .ts-data tr, .ts-data td { display: block; width: auto !important; }
  .ts-data thead { display: none; }
  .ts-data tr { border: 1px solid var(--border-color-primary, #e5e7eb); margin-bottom: 8px; }
  .ts-data table, .ts-data td { border: none !important; }
  .ts-data td:not(.ts-text) { display: inline-block; }
  .ts-data td:not(.ts-text)::before { content: attr(data-label) ": "; color: var(--body-text-color-subdued); }
}
.ts-data mark { background: #fde68a; color: inherit; border-radius: 2px; }
.ts-error { color: var(--error-text-color, #b91c1c); white-space: pre-wrap; overflow-wrap: anywhere; }
"""
KEY_LOOK = ("font-family: var(--font-mono, monospace); font-size: 11px; font-weight: normal; margin-left: 6px; "
            "color: var(--body-text-color-subdued, #6b7280); overflow-wrap: anywhere;")


def page_css(keys: dict[str, str]) -> str:
    """The CSS of the page; keys: elem_id -> the config key its field writes, shown after the label."""
    rules = [f'#{elem_id} [data-testid="block-info"]::after, #{elem_id} .label-text::after {{ content: "{key}"; }}'
             for elem_id, key in keys.items()]
    look = f'.ts-field [data-testid="block-info"]::after, .ts-field .label-text::after {{ {KEY_LOOK} }}'
    return "\n".join([BASE, look, *rules])
