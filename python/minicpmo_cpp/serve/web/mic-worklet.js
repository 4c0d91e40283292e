// Microphone capture for the realtime page: the context's samples, resampled to 16 kHz by linear
// interpolation, handed to the page one second (16000 samples) at a time.
class MicUnits extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / 16000;  // input samples per output sample
    this.pos = 0;                    // position of the next output sample in the input stream
    this.prev = 0;                   // the last input sample of the previous block
    this.unit = new Float32Array(16000);
    this.filled = 0;
  }
  process(inputs) {
    const x = inputs[0] && inputs[0][0];
    if (!x) return true;
    // input index -1 is the previous block's last sample, so interpolation spans block edges
    while (this.pos < x.length - 1 + 1e-9) {
      const i = Math.floor(this.pos), f = this.pos - i;
      const a = i < 0 ? this.prev : x[i], b = x[Math.min(i + 1, x.length - 1)];
      this.unit[this.filled++] = a + (b - a) * f;
      if (this.filled === 16000) {
        this.port.postMessage(this.unit.slice(0));
        this.filled = 0;
      }
      this.pos += this.step;
    }
    this.pos -= x.length;
    this.prev = x[x.length - 1];
    return true;
  }
}
registerProcessor("mic-units", MicUnits);
