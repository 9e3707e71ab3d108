// Poll a running backtest's progress; reload with the results when it ends.
(() => {
  const box = document.getElementById("backtest");
  if (!box) return;
  const bar = document.getElementById("bt-progress");
  const status = document.getElementById("bt-status");
  const count = document.getElementById("bt-count");
  async function poll() {
    try {
      const response = await fetch(box.dataset.statusUrl, { credentials: "same-origin" });
      if (response.ok) {
        const run = await response.json();
        bar.value = run.percent;
        bar.textContent = run.percent + "%";
        status.textContent = run.status;
        count.textContent = `${run.processed} of ${run.total}`;
        if (run.status !== "running") { window.location.reload(); return; }
      }
    } catch (err) { /* try again */ }
    setTimeout(poll, 700);
  }
  setTimeout(poll, 500);
})();
