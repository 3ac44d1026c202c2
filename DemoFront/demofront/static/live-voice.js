// The voice that comes back with the live frames (protocol 2), played on the page's AudioContext: each frame's
// PCM16 part is scheduled right after the previous one (gapless; a small jitter buffer when the stream starts or
// ran dry), and each frame is drawn when the 40 ms of sound it shows start to be heard, so picture and voice keep
// in step. The microphone and the playback share the context's clock, so the queue neither grows nor drains.
(function () {
  "use strict";
  var RATE = 16000;
  var WINDOW = 640;       // a frame shows the 40 ms of sound before its audio position
  var LEAD = 0.08;        // s: the jitter buffer, from a part's arrival to its sound, when the stream (re)starts
  var MAX_LEAD = 0.3;     // s: more queued than this (a burst after a stall) and a part is dropped, not queued
  var SUB = 160;          // loudness of the played parts per 10 ms, for the figures and the tests

  function LiveVoice(ctx, stats) {
    this.ctx = ctx;
    this.stats = stats;
    this.gain = ctx.createGain();
    this.analyser = ctx.createAnalyser();
    this.analyser.fftSize = 2048;
    this.samples = new Float32Array(this.analyser.fftSize);
    this.gain.connect(this.analyser);
    this.analyser.connect(ctx.destination);
    this.next = 0;        // context time where the next part starts
    this.anchor = null;   // [a sample position, the context time it plays at]
  }

  // Queue `pcm` (Int16Array), the samples [end - pcm.length, end) of the sound sent.
  LiveVoice.prototype.schedule = function (pcm, end) {
    var ctx = this.ctx, now = ctx.currentTime, n = pcm.length, stats = this.stats;
    stats.offered += n;
    if (n === 0) { return; }
    if (this.next < now + 0.005) {
      this.next = now + LEAD;
      stats.restarts += 1;
    } else if (this.next - now > MAX_LEAD) {
      stats.dropped += n;
      return;
    }
    var buffer = ctx.createBuffer(1, n, RATE), data = buffer.getChannelData(0), loud = [];
    for (var i = 0; i < n; i++) { data[i] = pcm[i] / 32768; }
    for (var s = 0; s + SUB <= n; s += SUB) {
      var sum = 0;
      for (var k = s; k < s + SUB; k++) { sum += data[k] * data[k]; }
      loud.push(Math.sqrt(sum / SUB));
    }
    var source = ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(this.gain);
    source.start(this.next);
    this.anchor = [end - n, this.next];
    stats.parts.push([this.next, loud]);
    if (stats.parts.length > 20000) { stats.parts.splice(0, 10000); }
    this.next += n / RATE;
    stats.scheduled += n;
  };

  // From the graph to the ear: a frame drawn now should show the sound heard now, not the sound processed now.
  LiveVoice.prototype.outputLatency = function () {
    return (this.ctx.baseLatency || 0) + (this.ctx.outputLatency || 0);
  };

  // Milliseconds until the frame with audio position `position` should be on screen (<= 0: now).
  LiveVoice.prototype.delayMs = function (position) {
    if (!this.anchor) { return 0; }
    var at = this.anchor[1] + (position - WINDOW - this.anchor[0]) / RATE + this.outputLatency();
    return (at - this.ctx.currentTime) * 1000;
  };

  // The context time being heard now, and how far (ms) the frame for `position` is from its sound (+: late).
  LiveVoice.prototype.sync = function (position) {
    var heard = this.ctx.currentTime - this.outputLatency();
    if (!this.anchor) { return [heard, null]; }
    var sample = this.anchor[0] + (heard - this.anchor[1]) * RATE;
    return [heard, (sample - (position - WINDOW)) / 16];
  };

  // The loudest sample the output plays right now (what reaches the speakers, through the gain).
  LiveVoice.prototype.measure = function () {
    this.analyser.getFloatTimeDomainData(this.samples);
    var peak = 0;
    for (var i = 0; i < this.samples.length; i++) { peak = Math.max(peak, Math.abs(this.samples[i])); }
    this.stats.peak = Math.max(this.stats.peak, peak);
    return peak;
  };

  LiveVoice.prototype.close = function () {
    this.gain.disconnect();
    this.analyser.disconnect();
  };

  LiveVoice.newStats = function () {
    return { offered: 0, scheduled: 0, dropped: 0, restarts: 0, peak: 0, parts: [] };
  };

  window.LiveVoice = LiveVoice;
})();
