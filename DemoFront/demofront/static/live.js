// The live page: microphone -> AudioWorklet (16 kHz, 20 ms blocks) -> WebSocket -> JPEG frames (and the voice,
// protocol 2) -> canvas (and, when "play my voice back" is ticked, the speakers in step: live-voice.js).
// window.liveStats keeps what the tests and the figures need: per 20 ms block its send time and loudness, per
// frame its draw time, the latency from the newest sound it shows, the darkness inside the mouth box, and with the
// voice playing the context time heard when it was drawn and how far it was from its sound; stats.voice counts.
(function () {
  "use strict";
  var HEADER = 24;  // <IQffI: index, audio position, jaw opening, eyelid closure, voice bytes that follow
  var stats = window.liveStats = { blocks: [], frames: [], ready: null, errors: [],
                                   voice: window.LiveVoice.newStats() };
  var state = { ws: null, audio: null, stream: null, image: null, sentAt: new Map(), samples: 0, box: null,
                voice: null, drawn: -1 };

  function $(id) { return document.getElementById(id); }
  function say(text) { $("live-state").textContent = text; }

  function chooseExample(button) {
    var url = document.getElementById("live").getAttribute("data-example-url") + button.getAttribute("data-file");
    fetch(url).then(function (r) { return r.blob(); }).then(function (blob) { setImage(blob); });
    document.querySelectorAll(".example-portrait").forEach(function (b) { b.classList.remove("chosen"); });
    button.classList.add("chosen");
  }

  function setImage(blob) {
    state.image = blob;
    createImageBitmap(blob).then(function (bitmap) {
      var canvas = $("live-canvas"), ctx = canvas.getContext("2d");
      var side = Math.min(bitmap.width, bitmap.height);
      ctx.drawImage(bitmap, (bitmap.width - side) / 2, (bitmap.height - side) / 2, side, side, 0, 0,
                    canvas.width, canvas.height);
      say("Ready: press Start and allow the microphone.");
    });
  }

  function base64(blob) {
    return new Promise(function (resolve) {
      var reader = new FileReader();
      reader.onload = function () { resolve(String(reader.result).split(",")[1]); };
      reader.readAsDataURL(blob);
    });
  }

  function start() {
    if (!state.image) { say("Pick a portrait first."); return; }
    $("live-start").disabled = true;
    say("Starting…");
    var micPromise = navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: false,
                                                                    autoGainControl: true, channelCount: 1 } });
    Promise.all([micPromise, base64(state.image)]).then(function (got) {
      state.stream = got[0];
      var ws = state.ws = new WebSocket(document.getElementById("live").getAttribute("data-live-url"));
      ws.binaryType = "arraybuffer";
      ws.onopen = function () {
        ws.send(JSON.stringify({ type: "start", image: got[1], size: Number($("live-size").value),
                                 still_mode: $("live-still").checked, voice: true }));  // played only if ticked
      };
      ws.onmessage = function (event) {
        if (typeof event.data === "string") { control(JSON.parse(event.data)); } else { frame(event.data); }
      };
      ws.onclose = function (event) { stop(event.code === 1000 || event.code === 1005 ? "Stopped." : null); };
      ws.onerror = function () { stats.errors.push("websocket error"); };
    }).catch(function (err) {
      stats.errors.push(String(err));
      say("No microphone: " + err.message);
      $("live-start").disabled = false;
    });
  }

  function control(message) {
    if (message.type === "ready") {
      stats.ready = message;
      state.box = message.mouth_box;
      var canvas = $("live-canvas");
      canvas.width = message.width;
      canvas.height = message.height;
      startAudio();
      $("live-stop").disabled = false;
      say("Live: speak!");
    } else if (message.type === "error") {
      stats.errors.push(message.error);
      say("Refused: " + message.error);
    } else if (message.type === "stats") {
      stats.server = message;
    }
  }

  function startAudio() {
    var ctx = state.audio = new AudioContext({ latencyHint: "interactive" });
    ctx.audioWorklet.addModule(document.querySelector("script[src*='live.js']").src.replace("live.js", "live-worklet.js"))
      .then(function () {
        var source = ctx.createMediaStreamSource(state.stream);
        var node = new AudioWorkletNode(ctx, "capture-16k");
        node.port.onmessage = function (event) { send(event.data); };
        source.connect(node);  // not to the speakers: the voice comes back only from the service, if ticked
      });
    playVoice($("live-voice").checked);
  }

  // The voice to the speakers (in step with the frames) or not; the frames are drawn on arrival when not.
  function playVoice(on) {
    if (on && !state.voice && state.audio) {
      state.voice = new window.LiveVoice(state.audio, stats.voice);
    } else if (!on && state.voice) {
      state.voice.close();
      state.voice = null;
    }
  }

  function send(block) {
    var ws = state.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) { return; }
    var pcm = new Int16Array(block.samples.length);
    for (var i = 0; i < pcm.length; i++) { pcm[i] = Math.max(-32768, Math.min(32767, Math.round(block.samples[i] * 32767))); }
    ws.send(pcm.buffer);
    state.samples += pcm.length;
    var now = performance.now();
    state.sentAt.set(state.samples, now);
    stats.blocks.push([now, block.rms]);
    if (stats.blocks.length > 30000) { stats.blocks.splice(0, 15000); }
    $("live-level").style.width = Math.min(100, block.rms * 400) + "%";
  }

  function frame(buffer) {
    var view = new DataView(buffer);
    var index = view.getUint32(0, true);
    var position = view.getUint32(4, true) + view.getUint32(8, true) * 4294967296;
    var opening = view.getFloat32(12, true);
    var voiceBytes = view.getUint32(20, true);
    var voice = state.voice;
    if (voice) { voice.schedule(new Int16Array(buffer, HEADER, voiceBytes / 2), position); }
    var blob = new Blob([new Uint8Array(buffer, HEADER + voiceBytes)], { type: "image/jpeg" });
    createImageBitmap(blob).then(function (bitmap) {
      var wait = voice && voice === state.voice ? voice.delayMs(position) : 0;
      if (wait > 1) {
        setTimeout(function () { draw(bitmap, index, position, opening); }, wait);
      } else {
        draw(bitmap, index, position, opening);
      }
    });
  }

  function draw(bitmap, index, position, opening) {
    if (index <= state.drawn) { return; }  // a newer frame is on screen already
    state.drawn = index;
    var canvas = $("live-canvas"), ctx = canvas.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(bitmap, 0, 0);
    var drawn = performance.now();
    var sent = state.sentAt.get(position);
    var latency = sent === undefined ? null : drawn - sent;
    var dark = null;
    if (state.box) {
      var b = state.box, pixels = ctx.getImageData(b[0], b[1], b[2] - b[0], b[3] - b[1]).data, sum = 0;
      for (var i = 0; i < pixels.length; i += 4) { sum += 255 - (0.299 * pixels[i] + 0.587 * pixels[i + 1] + 0.114 * pixels[i + 2]); }
      dark = sum / (pixels.length / 4);
    }
    var heard = null, sync = null;
    if (state.voice) {
      var got = state.voice.sync(position);
      heard = got[0];
      sync = got[1];
      state.voice.measure();
    }
    stats.frames.push([drawn, index, latency, dark, opening, heard, sync]);
    if (stats.frames.length > 30000) { stats.frames.splice(0, 15000); }
    if (index % 25 === 0) { figures(); }
  }

  function figures() {
    var recent = stats.frames.slice(-50), lat = recent.map(function (f) { return f[2]; })
      .filter(function (x) { return x !== null; }).sort(function (a, b) { return a - b; });
    var span = recent.length > 1 ? (recent[recent.length - 1][0] - recent[0][0]) / 1000 : 0;
    var fps = span > 0 ? (recent.length - 1) / span : 0;
    $("live-figures").textContent = "· " + fps.toFixed(1) + " fps" +
      (lat.length ? " · sound to picture " + Math.round(lat[Math.floor(lat.length / 2)]) + " ms" : "") +
      (state.voice ? " (with your voice, in step)" : "");
  }

  function stop(message) {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) { state.ws.close(1000); }
    playVoice(false);
    if (state.audio) { state.audio.close(); state.audio = null; }
    state.drawn = -1;
    if (state.stream) { state.stream.getTracks().forEach(function (t) { t.stop(); }); state.stream = null; }
    state.ws = null;
    state.sentAt = new Map();
    state.samples = 0;
    $("live-start").disabled = false;
    $("live-stop").disabled = true;
    if (message) { say(message); } else if (!stats.errors.length) { say("The connection closed."); }
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (!$("live")) { return; }
    document.querySelectorAll(".example-portrait").forEach(function (b) {
      b.addEventListener("click", function () { chooseExample(b); });
    });
    $("live-image").addEventListener("change", function (e) { if (e.target.files[0]) { setImage(e.target.files[0]); } });
    $("live-start").addEventListener("click", start);
    $("live-stop").addEventListener("click", function () { stop("Stopped."); });
    $("live-voice").addEventListener("change", function (e) { playVoice(e.target.checked); });
  });
})();
