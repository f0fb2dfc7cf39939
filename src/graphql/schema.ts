import { builder } from './builder.js';
import './types/errors.js';
import './types/avatar-task.js';
import './types/create-avatar-task.js';
import './types/cancel-avatar-task.js';
import './types/kie-account.js';

export const schema = builder.toSchema({ sortSchema: false });
