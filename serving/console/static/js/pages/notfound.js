// A console URL that matches no page: the frame (sign-in, navigation) and nothing else.

import { boot } from "../shell.js";

boot(async () => {});
