// Live status on a job's page: poll GET /api/jobs/<id> until the job ends (done, failed or cancelled).
(function () {
  "use strict";
  function text(id, value) { var el = document.getElementById(id); if (el) { el.textContent = value; } }

  function render(job) {
    var status = document.getElementById("job-status");
    status.textContent = job.status;
    status.className = "status " + job.status;
    var stage = "";
    if (job.status === "queued" && job.queue_position) { stage = "position " + job.queue_position + " in the queue"; }
    else if (job.stage) { stage = job.stage; }
    text("job-stage", stage);
    var bar = document.getElementById("job-progress");
    bar.value = job.status === "done" ? 1 : job.progress;
    bar.hidden = job.status === "failed" || job.status === "cancelled";
    var cancel = document.getElementById("cancel-form");
    if (cancel && job.status !== "queued" && job.status !== "running") { cancel.hidden = true; }
    if (job.engine) { text("job-engine", job.engine); }
    var error = document.getElementById("job-error");
    if (job.error) { error.textContent = job.error; error.hidden = false; }
    if (job.status === "done" && job.video_url) {
      var video = document.getElementById("job-video");
      if (!video.getAttribute("src")) { video.setAttribute("src", job.video_url); video.load(); }
      document.getElementById("job-result").hidden = false;
    }
  }

  function poll(section) {
    var url = section.getAttribute("data-status-url");
    var delay = 1000;
    function tick() {
      fetch(url, { headers: { "Accept": "application/json" }, credentials: "same-origin" })
        .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
        .then(function (job) {
          render(job);
          section.setAttribute("data-status", job.status);
          if (job.status === "queued" || job.status === "running") { setTimeout(tick, delay); }
        })
        .catch(function () { delay = Math.min(delay * 2, 10000); setTimeout(tick, delay); });
    }
    tick();
  }

  document.addEventListener("DOMContentLoaded", function () {
    var section = document.getElementById("job");
    if (section) {
      var status = section.getAttribute("data-status");
      if (status === "queued" || status === "running") { poll(section); }
    }
    document.querySelectorAll("form button.danger").forEach(function (b) {
      b.addEventListener("click", function (e) { if (!window.confirm("Delete this generation and its files?")) { e.preventDefault(); } });
    });
  });
})();
