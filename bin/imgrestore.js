#!/usr/bin/env node
import "../dist/bundle/imgrestore.mjs";
