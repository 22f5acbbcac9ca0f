"""Static HTML reports of stage-2 outputs and stores (`python -m jobs.report`).

`write_report` looks at what it is given (an `sae_stats` output, an intervention output,
or an activation store), claims the site folder and writes the matching pages; see
docs/report.md.
"""

from pipeline.report.build import REPORT_OUTPUTS, report_kind, write_report

__all__ = ["REPORT_OUTPUTS", "report_kind", "write_report"]
