/** Where a client keeps the last `seq` it delivered, so that a restart resumes after it. */
/** Keeps the position for the life of the client object (the default). */
export class MemorySeqStore {
    seq;
    constructor(seq = null) {
        this.seq = seq;
    }
    load() {
        return this.seq;
    }
    save(seq) {
        this.seq = seq;
    }
}
/** Keeps the position in `localStorage` (or any Web Storage) under `key`: it survives a page reload. */
export class WebStorageSeqStore {
    key;
    storage;
    constructor(key, storage) {
        this.key = key;
        const found = storage ?? globalThis.localStorage;
        if (!found)
            throw new Error("WebStorageSeqStore needs a Storage (localStorage is not available here)");
        this.storage = found;
    }
    load() {
        const raw = this.storage.getItem(this.key);
        const seq = raw === null ? NaN : Number(raw);
        return Number.isInteger(seq) && seq >= 0 ? seq : null;
    }
    save(seq) {
        this.storage.setItem(this.key, String(seq));
    }
}
