"""`embtune push`: uploads the adapter or merged folder (the Hub upload itself is mocked) and never
shows the token."""
from __future__ import annotations

from pathlib import Path

from cli_helpers import TOKEN, ok, one_line_error


def test_push_uploads_the_folder_and_never_shows_the_token(trained, monkeypatch, capsys):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    run, _ = trained
    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create", repo_id, kw))
                        or f"https://huggingface.co/{repo_id}")

    def upload(self, **kw):
        files = sorted(p.name for p in Path(kw["folder_path"]).iterdir())
        calls.append(("upload", self.token, kw, files))

    monkeypatch.setattr(HfApi, "upload_folder", upload)
    result = ok("push", run / "adapter", "--repo-id", "me/tuned", "--private", "--token", TOKEN)
    assert result.output.strip() == f"uploaded adapter {run / 'adapter'} to https://huggingface.co/me/tuned"
    (create, repo, kwargs), (_, token, upload_kwargs, files) = calls
    assert repo == "me/tuned" and kwargs["private"] is True and token == TOKEN
    assert upload_kwargs["folder_path"] == str(run / "adapter") and upload_kwargs["repo_id"] == "me/tuned"
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(files)
    assert ok("push", run / "merged", "--repo-id", "me/merged").output.startswith("uploaded model ")

    def refused(self, **kw):
        import httpx2

        url = f"https://huggingface.co/api/me/tuned/upload?token={self.token}"
        raise HfHubHTTPError(f"401 Client Error: Unauthorized for url: {url}",
                             response=httpx2.Response(401, request=httpx2.Request("POST", url)))

    monkeypatch.setattr(HfApi, "upload_folder", refused)
    line = one_line_error("push", run / "merged", "--repo-id", "me/tuned", "--token", TOKEN)
    assert "401" in line and "[token redacted]" in line and TOKEN not in line
    assert "does not exist" in one_line_error("push", run.parent / "none", "--repo-id", "me/x")
    (run.parent / "manifest.json").write_text("{}")
    assert "push its merged/ or adapter/" in one_line_error("push", run.parent, "--repo-id", "me/x")
    assert "not a Hub repo id" in one_line_error("push", run / "merged", "--repo-id", "a/b/c")
