// Microphone capture for the live page: resample the context's rate to 16 kHz (linear interpolation) and post
// 20 ms blocks (320 samples, Float32) with their loudness.
class Capture16k extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / 16000;  // input samples per output sample
    this.pos = 0;                    // position of the next output sample, in input samples of `this.prev`+block
    this.prev = 0;
    this.block = new Float32Array(320);
    this.fill = 0;
  }
  process(inputs) {
    const input = inputs[0] && inputs[0][0];
    if (!input) { return true; }
    // output samples at positions pos, pos + step, ... over [prev, input[0], ..., input[n-1]] (index -1 = prev)
    while (this.pos < input.length - 1) {
      const i = Math.floor(this.pos);
      const frac = this.pos - i;
      const a = i < 0 ? this.prev : input[i];
      const b = input[i + 1];
      this.block[this.fill++] = a + (b - a) * frac;
      if (this.fill === this.block.length) {
        let sum = 0;
        for (let k = 0; k < this.block.length; k++) { sum += this.block[k] * this.block[k]; }
        this.port.postMessage({ samples: this.block.slice(0), rms: Math.sqrt(sum / this.block.length) });
        this.fill = 0;
      }
      this.pos += this.step;
    }
    this.pos -= input.length;
    this.prev = input[input.length - 1];
    return true;
  }
}
registerProcessor("capture-16k", Capture16k);
