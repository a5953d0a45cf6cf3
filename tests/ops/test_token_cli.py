"""`chatmq token issue --admin` where CHATMQ_SERVER is exported (the README's remote set-up)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from chatmq.cli.main import cli


def test_admin_token_without_the_key_says_where_the_key_goes(tmp_path: Path) -> None:
    """With CHATMQ_SERVER set and no key, the command used to answer "--server needs an admin token
    (`chatmq token issue --admin`)": the very command that failed."""
    env = {"CHATMQ_SERVER": "http://127.0.0.1:9", "CHATMQ_SECRET_KEY": None, "CHATMQ_ADMIN_TOKEN": None,
           "CHATMQ_DATA_DIR": str(tmp_path / "data")}
    result = CliRunner().invoke(cli, ["token", "issue", "--admin"], env=env)
    assert result.exit_code == 2, result.output
    assert "CHATMQ_SECRET_KEY" in result.output and "without --server" in result.output, result.output
    assert "token issue --admin" not in result.output, result.output
    assert not (tmp_path / "data").exists()  # no stray key file minted


def test_admin_token_is_minted_from_the_data_dir_key_without_a_server(tmp_path: Path) -> None:
    env = {"CHATMQ_SERVER": None, "CHATMQ_SECRET_KEY": None, "CHATMQ_DATA_DIR": str(tmp_path)}
    (tmp_path / "secret.key").write_text("k" * 64)
    result = CliRunner().invoke(cli, ["token", "issue", "--admin"], env=env)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("eyJ"), result.output
