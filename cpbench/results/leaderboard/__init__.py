"""Leaderboards: Markdown, CSV and LaTeX tables, one self-contained HTML page, PNG plots (matplotlib on demand)."""

from cpbench.results.leaderboard.build import Analysis, LeaderboardConfig, analyze_tree, build_tables, write_leaderboard

__all__ = ["Analysis", "LeaderboardConfig", "analyze_tree", "build_tables", "write_leaderboard"]
