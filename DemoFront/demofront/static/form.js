// The upload form: one-click examples (portraits and clips put into the file inputs, texts into the text box), a
// preview of the portrait with the face the model service finds and the crop the chosen mode will use (before any
// job: a portrait without a face is refused here), and the clip's player with its duration.
(function () {
  "use strict";
  function $(id) { return document.getElementById(id); }
  var exampleBase = null;

  function putFile(input, blob, name) {
    var transfer = new DataTransfer();
    transfer.items.add(new File([blob], name, { type: blob.type }));
    input.files = transfer.files;
    input.dispatchEvent(new Event("change", { bubbles: true }));
  }

  function fromExample(input, name) {
    return fetch(exampleBase + name).then(function (r) { return r.blob(); })
      .then(function (blob) { putFile(input, blob, name); });
  }

  var previewToken = 0;
  function preview() {
    var input = $("image-input"), file = input.files[0], box = $("preview");
    if (!file) { box.hidden = true; return; }
    var token = ++previewToken;
    var form = $("generate-form"), body = new FormData();
    body.append("image", file);
    body.append("preprocess", form.elements.preprocess.value);
    body.append("size", form.elements.size.value);
    $("preview-note").textContent = "Looking for the face…";
    box.hidden = false;
    var bitmap = createImageBitmap(file);
    var answer = fetch("/api/preview", { method: "POST", body: body, credentials: "same-origin",
      headers: { "X-CSRF-Token": document.querySelector("meta[name=csrf-token]").content } })
      .then(function (r) { return r.json().then(function (j) { return { ok: r.ok, body: j }; }); });
    Promise.all([bitmap, answer]).then(function (got) {
      if (token !== previewToken) { return; }
      draw(got[0], got[1].ok ? got[1].body : null);
      var submit = form.querySelector("button[type=submit]");
      if (got[1].ok) {
        var p = got[1].body;
        $("preview-note").textContent = "Face found (green); the " + p.preprocess + " mode uses the blue frame, " +
          "made " + p.output[0] + "×" + p.output[1] + ".";
        $("preview-note").className = "small";
        submit.disabled = false;
      } else {
        $("preview-note").textContent = got[1].body.error || "This portrait cannot be used.";
        $("preview-note").className = "small error";
        submit.disabled = got[1].body.status === 422;  // no face: no job to waste
      }
    }).catch(function () { $("preview-note").textContent = "No preview (the model service did not answer)."; });
  }

  function draw(bitmap, info) {
    var canvas = $("preview-canvas"), scale = Math.min(1, 360 / Math.max(bitmap.width, bitmap.height));
    canvas.width = Math.round(bitmap.width * scale);
    canvas.height = Math.round(bitmap.height * scale);
    var ctx = canvas.getContext("2d");
    ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    if (!info) { return; }
    function rect(b, colour, dash) {
      ctx.strokeStyle = colour; ctx.lineWidth = 2; ctx.setLineDash(dash);
      ctx.strokeRect(b[0] * scale, b[1] * scale, (b[2] - b[0]) * scale, (b[3] - b[1]) * scale);
    }
    ctx.fillStyle = "rgba(0, 0, 0, 0.35)";  // dim what the crop leaves out
    var c = info.crop_box.map(function (v) { return v * scale; });
    ctx.fillRect(0, 0, canvas.width, c[1]);
    ctx.fillRect(0, c[3], canvas.width, canvas.height - c[3]);
    ctx.fillRect(0, c[1], c[0], c[3] - c[1]);
    ctx.fillRect(c[2], c[1], canvas.width - c[2], c[3] - c[1]);
    rect(info.crop_box, "#2f7dff", [6, 4]);
    rect(info.face_box, "#22c55e", []);
  }

  function audioPreview() {
    var file = $("audio-input").files[0], player = $("audio-player");
    if (!file) { $("audio-preview").hidden = true; return; }
    if (player.src) { URL.revokeObjectURL(player.src); }
    player.src = URL.createObjectURL(file);
    $("audio-preview").hidden = false;
    $("audio-duration").textContent = "";
    player.onloadedmetadata = function () { $("audio-duration").textContent = player.duration.toFixed(1) + " s"; };
  }

  document.addEventListener("DOMContentLoaded", function () {
    var form = $("generate-form");
    if (!form) { return; }
    var any = document.querySelector("#generate-form .example-portrait img");
    exampleBase = any ? any.getAttribute("src").replace(/[^/]*$/, "") : "/static/examples/";
    document.querySelectorAll("#generate-form .example-portrait").forEach(function (b) {
      b.addEventListener("click", function () {
        document.querySelectorAll("#generate-form .example-portrait").forEach(function (o) { o.classList.remove("chosen"); });
        b.classList.add("chosen");
        fromExample($("image-input"), b.getAttribute("data-file"));
      });
    });
    document.querySelectorAll("#generate-form .example-clip").forEach(function (b) {
      b.addEventListener("click", function () { form.elements.text.value = ""; fromExample($("audio-input"), b.getAttribute("data-file")); });
    });
    document.querySelectorAll("#generate-form .example-text").forEach(function (b) {
      b.addEventListener("click", function () {
        form.elements.text.value = b.querySelector("span").textContent;
        $("audio-input").value = ""; audioPreview();
      });
    });
    $("image-input").addEventListener("change", preview);
    form.elements.preprocess.addEventListener("change", preview);
    form.elements.size.addEventListener("change", preview);
    $("audio-input").addEventListener("change", audioPreview);
  });
})();
