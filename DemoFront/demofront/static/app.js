// Live status on a job's page: poll GET /api/jobs/<id> until the job ends (done, failed or cancelled); while it
// runs, play its stream (fragmented MP4, playable from the first fragment) and show the estimated time left.
(function () {
  "use strict";
  function text(id, value) { var el = document.getElementById(id); if (el) { el.textContent = value; } }

  function eta(job) {
    // time left from the progress so far: elapsed * (1 - p) / p, once there is enough progress to judge
    if (job.status !== "running" || !job.started_at || !(job.progress > 0.05) || job.progress >= 1) { return ""; }
    var elapsed = (Date.now() - Date.parse(job.started_at)) / 1000;
    if (!(elapsed > 0)) { return ""; }
    var left = elapsed * (1 - job.progress) / job.progress;
    return "· about " + (left < 10 ? left.toFixed(1) : Math.round(left)) + " s left";
  }

  function startStream(video, url) {
    if (!url || video.getAttribute("src")) { return; }
    video.setAttribute("src", url);
    video.setAttribute("data-streaming", "true");
    video.load();
    var playing = video.play();
    if (playing && playing.catch) {
      playing.catch(function () { video.muted = true; video.play().catch(function () {}); });
    }
  }

  function render(job) {
    var status = document.getElementById("job-status");
    status.textContent = job.status;
    status.className = "status " + job.status;
    var stage = "";
    if (job.status === "queued" && job.queue_position) { stage = "position " + job.queue_position + " in the queue"; }
    else if (job.stage) { stage = job.stage; }
    text("job-stage", stage);
    text("job-eta", eta(job));
    var bar = document.getElementById("job-progress");
    bar.value = job.status === "done" ? 1 : job.progress;
    bar.hidden = job.status === "failed" || job.status === "cancelled";
    var cancel = document.getElementById("cancel-form");
    if (cancel && job.status !== "queued" && job.status !== "running") { cancel.hidden = true; }
    if (job.engine) { text("job-engine", job.engine); }
    var error = document.getElementById("job-error");
    if (job.error) { error.textContent = job.error; error.hidden = false; }
    var video = document.getElementById("job-video");
    var result = document.getElementById("job-result");
    if (!video) { return; }
    if (job.status === "running" || job.status === "queued") {
      startStream(video, job.stream_url);
    }
    if (job.status === "done") {
      // a stream being played goes on to its end (it is the whole file); otherwise the finished video
      if (job.video_url && (!video.getAttribute("src") || video.error || video.readyState === 0)) {
        video.removeAttribute("data-streaming");
        video.setAttribute("src", job.video_url);
        video.load();
      }
      var line = document.getElementById("job-download-line");
      if (line) { line.hidden = false; }
    }
    result.hidden = job.status === "failed" && !video.getAttribute("src");
  }

  function poll(section) {
    var url = section.getAttribute("data-status-url");
    var delay = 500;
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
      var video = document.getElementById("job-video");
      if ((status === "running" || status === "queued") && video) {
        startStream(video, section.getAttribute("data-stream-url"));
      }
      if (status === "queued" || status === "running") { poll(section); }
    }
    document.querySelectorAll("form button.danger").forEach(function (b) {
      b.addEventListener("click", function (e) { if (!window.confirm("Delete this generation and its files?")) { e.preventDefault(); } });
    });
  });
})();
